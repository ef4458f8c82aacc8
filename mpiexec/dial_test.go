package mpiexec

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestIsTimeout(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"dial past its deadline", fmt.Errorf("mpiexec: dial front end: %w", fmt.Errorf("link: %w", &net.OpError{Op: "dial", Err: timeoutErr{}})), true},
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
