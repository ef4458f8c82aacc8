package registry

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Names of the built-in apps, registered in Default.
const (
	AppNoop  = "noop"  // any arguments; returns nil
	AppEcho  = "echo"  // one argument; returns it unchanged
	AppSleep = "sleep" // one float64, seconds; returns nil
	AppShell = "shell" // one string (a /bin/sh command) or a ShellSpec; returns a ShellResult
)

func init() {
	for name, h := range map[string]Handler{
		AppNoop:  noop,
		AppEcho:  echo,
		AppSleep: sleep,
		AppShell: shell,
	} {
		if err := Default.Register(name, h); err != nil {
			panic(err)
		}
	}
}

func noop(context.Context, []byte) ([]byte, error) { return msgpackNil, nil }

// echo returns its one argument's raw bytes, without decoding them.
func echo(_ context.Context, args []byte) ([]byte, error) {
	parts, err := SplitArgs(args, 1)
	if err != nil {
		return nil, err
	}
	return parts[0], nil
}

// maxSleep bounds the sleep app's argument (a year).
const maxSleep = 365 * 24 * time.Hour

func sleep(ctx context.Context, args []byte) ([]byte, error) {
	var secs float64
	if err := DecodeArgs(args, &secs); err != nil {
		return nil, err
	}
	if math.IsNaN(secs) || secs < 0 || secs > maxSleep.Seconds() {
		return nil, ArgsErrorf("sleep: %v is not a number of seconds from 0 to %v", secs, maxSleep.Seconds())
	}
	t := time.NewTimer(time.Duration(secs * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return msgpackNil, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("sleep interrupted: %w", context.Cause(ctx))
	}
}
