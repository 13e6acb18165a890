package oci

import "context"

// CheckpointOpts are the options of Checkpoint.
type CheckpointOpts struct {
	ImagePath string // CRIU writes the container's images here
	WorkPath  string // CRIU's work directory: its dump.log and stats-dump
	// ShellJob lets CRIU dump a container whose process has a terminal
	// (process.terminal): the pty's other end is outside the container.
	ShellJob bool
}

// Checkpoint dumps running container id with CRIU into o.ImagePath and
// leaves it running (--leave-running). Established TCP connections and
// unix sockets connected outside the container are dumped too, as a
// Kubernetes checkpoint expects. The runtime freezes the container during
// the dump; if the command is killed (ctx done) it may stay paused: the
// caller resumes it (Resume).
func (r *Runtime) Checkpoint(ctx context.Context, id string, o CheckpointOpts) error {
	args := []string{"--image-path", o.ImagePath, "--work-path", o.WorkPath,
		"--leave-running", "--tcp-established", "--ext-unix-sk", "--file-locks"}
	if o.ShellJob {
		args = append(args, "--shell-job")
	}
	_, err := r.run(ctx, "checkpoint", id, nil, append(args, id)...)
	return err
}

// Resume thaws paused container id.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	_, err := r.run(ctx, "resume", id, nil, id)
	return err
}
