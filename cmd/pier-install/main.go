// Command pier-install is the container of pier's DaemonSet: it installs
// pier onto the node it runs on, through the host's root file system
// mounted into the pod, and can switch the node's kubelet to pier and back.
// See package installer, and deploy/helm/pier for how it is run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pier-runtime/pier/installer"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `Usage:
  pier-install install [flags]     install pier on this node (--wait: then run until SIGTERM)
  pier-install uninstall [flags]   undo what install did (--wait: then run until SIGTERM)
  pier-install status [flags]      exit 0 when install has finished on this node
  pier-install uninstall-cluster --daemonset FILE [--namespace NS] [--timeout 15m]
                                   the chart's post-delete Job: run the uninstall DaemonSet
                                   until no node has pier, then delete it
  pier-install kubelet-apply --request FILE
                                   (run on the host by install and uninstall themselves)
  pier-install --version
`

func main() {
	log.SetFlags(log.LstdFlags | log.Lmsgprefix)
	log.SetPrefix("pier-install: ")
	if err := run(os.Args[1:]); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "--version", "-version", "version":
		fmt.Println("pier-install", version)
		return nil
	case "-h", "--help", "help":
		fmt.Print(usage)
		return nil
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("pier-install "+cmd, flag.ContinueOnError)
	o := installer.Options{}
	fs.StringVar(&o.HostRoot, "host-root", "/host", "the host's / as mounted in the pod")
	fs.StringVar(&o.Payload, "payload", "/opt/pier", "the image's pier tree (bin/, cni/bin/, share/)")
	fs.StringVar(&o.ConfigDir, "config-dir", "/etc/pier-install/config.d", "pier drop-ins (*.toml) to install into the host's /etc/pier/config.d")
	fs.BoolVar(&o.SwitchKubelet, "switch-kubelet", false, "switch the node's kubelet to pier (install) and back (uninstall)")
	fs.StringVar(&o.KubeletConfig, "kubelet-config", "/var/lib/kubelet/config.yaml", "the kubelet's configuration file (host path)")
	fs.StringVar(&o.KubeletFlags, "kubelet-flags", "/var/lib/kubelet/kubeadm-flags.env", "kubeadm's kubelet flags file (host path; ignored when missing)")
	fs.StringVar(&o.KubeletUnit, "kubelet-unit", "kubelet.service", "the kubelet's systemd unit")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long install or uninstall may take")
	wait := fs.Bool("wait", false, "after install or uninstall, keep running until SIGTERM (a DaemonSet's container)")
	daemonset := fs.String("daemonset", "", "uninstall-cluster: the uninstall DaemonSet's manifest")
	namespace := fs.String("namespace", os.Getenv("POD_NAMESPACE"), "uninstall-cluster: the DaemonSet's namespace")
	request := fs.String("request", "", "kubelet-apply: the request file (host path)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch cmd {
	case "install", "uninstall":
		self, err := os.Executable()
		if err != nil {
			return err
		}
		o.Self = self
		o.Log = log.Printf
		o.Systemd = installer.NewSystemd(o.HostRoot)
		o.Runtimes = installer.NewRuntimes(o.HostRoot)
		if o.Cluster, err = installer.NewCluster(); err != nil {
			return err
		}
		if o.Cluster != nil && o.NodeName == "" {
			return errors.New("--node-name (or $NODE_NAME, from the downward API's spec.nodeName) is required in a cluster")
		}
		in := installer.New(o)
		if cmd == "install" {
			err = in.Install(ctx)
		} else {
			err = in.Uninstall(ctx)
		}
		if err != nil {
			return err
		}
		if *wait {
			log.Printf("%s finished: waiting for SIGTERM", cmd)
			<-ctx.Done()
		}
		return nil
	case "status":
		ok, err := installer.New(o).Installed()
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("pier is not installed on this node (yet)")
		}
		fmt.Println("pier is installed")
		return nil
	case "uninstall-cluster":
		if *daemonset == "" {
			return errors.New("--daemonset is required")
		}
		manifest, err := os.ReadFile(*daemonset)
		if err != nil {
			return err
		}
		c, err := installer.Clientset()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		return installer.UninstallCluster(ctx, c, manifest, *namespace, 5*time.Second, log.Printf)
	case "kubelet-apply":
		if *request == "" {
			return errors.New("--request is required")
		}
		return installer.KubeletApply(ctx, "/", *request, installer.NewSystemd("/"), log.Printf)
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
