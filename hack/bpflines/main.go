// Command bpflines prints where each source line of a loaded BPF program
// begins in its JIT-compiled code: one line per line-info record, its
// offset from the program's symbol (as perf prints sym+off) first, sorted
// by offset. hack/profile-fastpath.sh joins
// it with perf's samples to say which lines of the program take the time,
// where perf itself cannot annotate a JIT-compiled program.
//
//	bpflines turnrelay
//
// As root (reading a program's code and its kernel addresses needs it).
// Of several loaded programs of that name it prints the newest (highest
// ID), under a header line that names it.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bpflines PROGRAM-NAME")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "bpflines:", err)
		os.Exit(1)
	}
}

func run(name string) error {
	var newest ebpf.ProgramID
	var newestInfo *ebpf.ProgramInfo
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return err
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := prog.Info()
		prog.Close()
		if err == nil && info.Name == name {
			newest, newestInfo = id, info
		}
	}
	if newestInfo == nil {
		return fmt.Errorf("no loaded program named %q", name)
	}
	if err := print(newest, newestInfo); err != nil {
		return fmt.Errorf("program %d: %w", newest, err)
	}
	return nil
}

// print writes info's line table: the JIT gives the address of each
// line-info record's first instruction, in the records' order.
func print(id ebpf.ProgramID, info *ebpf.ProgramInfo) error {
	lines, err := info.LineInfos()
	if err != nil {
		return err
	}
	addrs, ok := info.JitedLineInfos()
	ksyms, _ := info.JitedKsymAddrs()
	if !ok || len(addrs) != len(lines) || len(ksyms) == 0 || ksyms[0] == 0 {
		return fmt.Errorf("%d JIT addresses for %d line records (not JIT-compiled, or addresses hidden by kptr_restrict)", len(addrs), len(lines))
	}
	if len(ksyms) > 1 {
		// Offsets from the first symbol would not be perf's for the others.
		return fmt.Errorf("%d subprograms; only a program of one function is supported", len(ksyms))
	}
	type row struct {
		off  uint64
		line uint32
		text string
	}
	rows := make([]row, len(lines))
	for i, l := range lines {
		rows[i] = row{addrs[i] - uint64(ksyms[0]), l.Line.LineNumber(), strings.TrimSpace(l.Line.Line())}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].off < rows[j].off })
	fmt.Printf("# program %d %s\n", id, info.Name)
	for _, r := range rows {
		fmt.Printf("%x\t%d\t%s\n", r.off, r.line, r.text)
	}
	return nil
}
