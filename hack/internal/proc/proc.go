// Package proc reads what the benchmarks measure of a process from
// /proc (its CPU time and its resident memory), and where a process
// stands among the others (its parent and its process group).
package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ticksPerSecond is USER_HZ, the unit of /proc/PID/stat's times on Linux.
const ticksPerSecond = 100

// CPUTime is utime+stime of a process (all its threads).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime from a /proc/PID/stat line: fields
// 14 and 15 of the line.
func parseStatCPU(stat string) (time.Duration, error) {
	fields, err := statFields(stat, 13)
	if err != nil {
		return 0, err
	}
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// ParentAndGroup is a process's parent and its process group.
func ParentAndGroup(pid int) (ppid, pgid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStatParentAndGroup(string(b))
}

// parseStatParentAndGroup reads ppid and pgrp from a /proc/PID/stat line:
// fields 4 and 5 of the line.
func parseStatParentAndGroup(stat string) (ppid, pgid int, err error) {
	fields, err := statFields(stat, 3)
	if err != nil {
		return 0, 0, err
	}
	if ppid, err = strconv.Atoi(fields[1]); err != nil {
		return 0, 0, err
	}
	pgid, err = strconv.Atoi(fields[2])
	return ppid, pgid, err
}

// statFields are the fields of a /proc/PID/stat line after the ")" that
// closes the command name (which may itself hold spaces and parentheses),
// from field 3 (the state) on; at least n of them.
func statFields(stat string, n int) ([]string, error) {
	close := strings.LastIndexByte(stat, ')')
	if close < 0 {
		return nil, errors.New("/proc/PID/stat: no command name")
	}
	fields := strings.Fields(stat[close+1:])
	if len(fields) < n {
		return nil, errors.New("/proc/PID/stat: too few fields")
	}
	return fields, nil
}

// RSS is a process's resident memory now (VmRSS), in bytes.
func RSS(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// PeakRSS is the most resident memory the process has had (VmHWM, the
// kernel's own high-water mark), in bytes.
func PeakRSS(pid int) (int64, error) { return statusBytes(pid, "VmHWM") }

func statusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKB(string(b), field)
}

// parseStatusKB reads a "Field:   123 kB" line of /proc/PID/status, in bytes.
func parseStatusKB(status, field string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/PID/status: no %s", field)
}
