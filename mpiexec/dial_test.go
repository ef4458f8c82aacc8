package mpiexec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestIsTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	// A dial whose deadline passed: a timeout, wrapped twice.
	_, derr := (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:9")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"dial past its deadline", fmt.Errorf("mpiexec: dial front end: %w", fmt.Errorf("link: %w", &net.OpError{Op: "dial", Err: timeoutErr{}})), true},
		{"context deadline", fmt.Errorf("x: %w", derr), derr != nil && errors.Is(derr, context.DeadlineExceeded)},
		{"refused", fmt.Errorf("x: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), false},
		{"plain", errors.New("token file"), false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, isTimeout(tt.err), tt.name)
	}
}

// timeoutErr is a net.Error that timed out.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
