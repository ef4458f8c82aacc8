package taskfarm

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/internal/link"
	"github.com/rankfarm/rankfarm/internal/registry"
	"github.com/rankfarm/rankfarm/rankpool"
	"github.com/rankfarm/rankfarm/serialize"
	"github.com/stretchr/testify/require"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startLocal starts an executor on an in-process block: a rankpool tree of
// workers+1 goroutine ranks running the registry's apps (real shell
// commands), linked to the front end by a pipe. The executor is closed at
// the test's end if the test has not closed it.
func startLocal(t *testing.T, workers int) *frontend.Executor {
	t.Helper()
	fe, be := link.Pipe()
	l := rankpool.NewLocal(workers + 1)
	ctx, cancel := context.WithCancel(context.Background())
	run := func(ctx context.Context, task serialize.Task) serialize.Result {
		return registry.Default.Run(ctx, task, 0)
	}
	treeDone := make(chan error, 1)
	go func() { treeDone <- rankpool.RunLocal(ctx, l, nil, 0, run, rankpool.Config{}) }()
	downDone, upDone := make(chan struct{}), make(chan struct{})
	go func() { // front end → rank 0
		defer close(downDone)
		for {
			m, err := be.Recv(ctx)
			if err != nil {
				return
			}
			l.UpSend(m)
		}
	}()
	go func() { // rank 0 → front end
		defer close(upDone)
		for {
			select {
			case e := <-l.UpInbox():
				if be.Send(e.Msg) != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	ex, err := frontend.Start(context.Background(), frontend.Options{Conn: fe, Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = ex.Close()
		select {
		case <-treeDone:
		case <-time.After(30 * time.Second):
			t.Error("the in-process block did not shut down")
			cancel()
			<-treeDone
		}
		cancel()
		_ = be.Close()
		<-downDone
		<-upDone
		l.Close()
	})
	return ex
}
