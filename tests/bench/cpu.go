package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPUUse is the CPU time the parties of a load used over its measured window. A throughput ratio on
// a machine whose cores are all busy is, first of all, a ratio of CPU spent per operation: these
// figures say who spends it.
type CPUUse struct {
	// Client is this process: the load generator, HTTP or pgx client included.
	Client time.Duration
	// Server is the server under test; zero for a baseline without one.
	Server time.Duration
	// Postgres is every process of the local PostgreSQL cluster (backends and background workers).
	// Zero when no local PostgreSQL process is readable (a remote database).
	Postgres time.Duration
}

// Total is the CPU time of all parties.
func (u CPUUse) Total() time.Duration { return u.Client + u.Server + u.Postgres }

func (u CPUUse) sub(v CPUUse) CPUUse {
	return CPUUse{Client: u.Client - v.Client, Server: u.Server - v.Server, Postgres: u.Postgres - v.Postgres}
}

// sampleCPU reads the CPU time used so far by this process, serverPID (if not 0) and the local
// PostgreSQL processes. A PostgreSQL backend that exits between two samples takes its time with it;
// the loads keep their connections open for the whole window, so that loses little.
func sampleCPU(serverPID int) (CPUUse, error) {
	var u CPUUse
	var err error
	if u.Client, err = processCPU("/proc/self/stat"); err != nil {
		return u, err
	}
	if serverPID != 0 {
		if u.Server, err = processCPU(fmt.Sprintf("/proc/%d/stat", serverPID)); err != nil {
			return u, err
		}
	}
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return u, fmt.Errorf("list processes: %w", err)
	}
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(b, []byte("(postgres)")) {
			continue // gone meanwhile, or not PostgreSQL
		}
		if d, err := parseProcessCPU(b); err == nil {
			u.Postgres += d
		}
	}
	return u, nil
}

// processCPU is the user plus system CPU time of the process whose /proc stat file is path.
func processCPU(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("CPU time: %w", err)
	}
	d, err := parseProcessCPU(b)
	if err != nil {
		return 0, fmt.Errorf("CPU time of %s: %w", path, err)
	}
	return d, nil
}

func parseProcessCPU(b []byte) (time.Duration, error) {
	// The command name (field 2) may contain spaces; the fields after its closing parenthesis do not.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, utime field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// measureCPU samples at from and at until and returns the use in between; it gives up when ctx ends.
func measureCPU(ctx context.Context, serverPID int, from, until time.Time) (CPUUse, error) {
	if !sleepUntil(ctx, from) {
		return CPUUse{}, ctx.Err()
	}
	start, err := sampleCPU(serverPID)
	if err != nil {
		return CPUUse{}, err
	}
	if !sleepUntil(ctx, until) {
		return CPUUse{}, ctx.Err()
	}
	end, err := sampleCPU(serverPID)
	if err != nil {
		return CPUUse{}, err
	}
	return end.sub(start), nil
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-time.After(time.Until(t)):
		return true
	case <-ctx.Done():
		return false
	}
}
