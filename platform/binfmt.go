package platform

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// BinfmtDir is where the kernel's binfmt_misc is mounted.
const BinfmtDir = "/proc/sys/fs/binfmt_misc"

// Emulator is one binfmt_misc registration that runs ELF binaries of a
// foreign CPU through an interpreter (QEMU user mode).
type Emulator struct {
	// Name is the registration's name (qemu-aarch64).
	Name string
	// Platform is what it runs, read from the ELF header it matches (its
	// magic), not from its name.
	Platform    Platform
	Interpreter string
	Flags       string
	Enabled     bool
	// Ignored says why the registration cannot run containers' binaries,
	// or is empty when it can: without flag F the kernel opens the
	// interpreter by its path inside the container's root file system,
	// where it is not; a dynamically linked interpreter needs its
	// libraries there too.
	Ignored string
}

// Usable reports whether e runs binaries inside containers.
func (e Emulator) Usable() bool { return e.Ignored == "" }

// Scan reads the registrations in dir (BinfmtDir) that run ELF binaries
// of another architecture than the node's. A dir that does not exist
// (binfmt_misc not mounted) has none. Entries it cannot read or that are
// not ELF magic are left out.
func Scan(dir string) []Emulator {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	native := Native()
	off := false
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil && strings.TrimSpace(string(b)) == "disabled" {
		off = true
	}
	var out []Emulator
	for _, e := range entries {
		if e.Name() == "status" || e.Name() == "register" {
			continue
		}
		em, ok := readEntry(filepath.Join(dir, e.Name()))
		if !ok || em.Platform.Architecture == native.Architecture {
			continue
		}
		switch {
		case off:
			em.Ignored = "binfmt_misc is disabled (its status file says so)"
		case !em.Enabled:
			em.Ignored = "the registration is disabled"
		case !strings.Contains(em.Flags, "F"):
			em.Ignored = "registered without flag F: the kernel would look for " + em.Interpreter + " inside each container"
		default:
			em.Ignored = dynamicInterpreter(em.Interpreter)
		}
		out = append(out, em)
	}
	slices.SortFunc(out, func(a, b Emulator) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// readEntry parses one registration file:
//
//	enabled
//	interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
//	flags: POCF
//	offset 0
//	magic 7f454c460201010000000000000000000200b700
//	mask ffffffffffffff00fffffffffffffffffeffffff
func readEntry(path string) (Emulator, bool) {
	f, err := os.Open(path)
	if err != nil {
		return Emulator{}, false
	}
	defer f.Close()
	em := Emulator{Name: filepath.Base(path)}
	var magic []byte
	offset := "0"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), " ")
		switch key {
		case "enabled":
			em.Enabled = true
		case "interpreter":
			em.Interpreter = val
		case "flags:":
			em.Flags = val
		case "offset":
			offset = val
		case "magic":
			magic, _ = hex.DecodeString(val)
		}
	}
	if offset != "0" {
		return Emulator{}, false
	}
	p, ok := elfPlatform(magic)
	em.Platform = p
	return em, ok
}

// elfPlatform maps the ELF header a registration matches (class, byte
// order and e_machine) to the OCI platform of such binaries.
func elfPlatform(magic []byte) (Platform, bool) {
	if len(magic) < 20 || string(magic[:4]) != elf.ELFMAG {
		return Platform{}, false
	}
	class, data := elf.Class(magic[4]), elf.Data(magic[5])
	var order binary.ByteOrder = binary.LittleEndian
	if data == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	machine := elf.Machine(order.Uint16(magic[18:20]))
	type key struct {
		class   elf.Class
		data    elf.Data
		machine elf.Machine
	}
	arch, ok := map[key]string{
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_AARCH64}:   "arm64",
		{elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_ARM}:       "arm",
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_X86_64}:    "amd64",
		{elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_386}:       "386",
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_RISCV}:     "riscv64",
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_PPC64}:     "ppc64le",
		{elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EM_PPC64}:     "ppc64",
		{elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EM_S390}:      "s390x",
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_MIPS}:      "mips64le",
		{elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EM_MIPS}:      "mips64",
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_LOONGARCH}: "loong64",
	}[key{class, data, machine}]
	if !ok {
		return Platform{}, false
	}
	return Normalize(Platform{OS: "linux", Architecture: arch}), true
}

// dynamicInterpreter says why interpreter cannot run in a container (it is
// dynamically linked), or "" when it can, or when it cannot be read (with
// flag F the kernel holds it open, so its path may be gone: it is taken
// to be usable).
func dynamicInterpreter(interpreter string) string {
	f, err := elf.Open(interpreter)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return interpreter + " is dynamically linked: it needs its libraries inside each container (use a static build, such as qemu-user-static's)"
		}
	}
	return ""
}
