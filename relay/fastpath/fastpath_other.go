//go:build !linux

package fastpath

import (
	"errors"
	"fmt"
	"runtime"
)

// Offload is the loaded program; only Linux has one.
type Offload struct{}

// Load fails: the fast path needs Linux.
func Load(interfaces []string) (*Offload, error) {
	return nil, fmt.Errorf("the fast path needs Linux, not %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func (o *Offload) Put(Channel) error           { return errors.ErrUnsupported }
func (o *Offload) Delete(Channel) error        { return errors.ErrUnsupported }
func (o *Offload) DeleteQuota(uint16) error    { return errors.ErrUnsupported }
func (o *Offload) Counters() (Counters, error) { return Counters{}, errors.ErrUnsupported }
func (o *Offload) Interfaces() []string        { return nil }
func (o *Offload) Close() error                { return nil }
