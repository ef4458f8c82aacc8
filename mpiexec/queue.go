package mpiexec

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/serialize"
)

// joinQueue makes rank 0 a block of the shared-filesystem queue in
// cfg.QueueDir: the link to the front end when no socket reaches it. It
// waits up to 30 s for a front end to open the queue.
// slots is the block's task slots, announced in its Hello.
func joinQueue(ctx context.Context, cfg Config, size, slots int) (*qlink.Block, error) {
	host, _ := os.Hostname()
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := qlink.Join(jctx, cfg.QueueDir, qlink.BlockOptions{
		Hello: serialize.Hello{
			Block:   cfg.Block,
			Ranks:   int32(size),
			Workers: int32(slots),
			Host:    host,
			PID:     int32(os.Getpid()),
		},
		PeerTimeout: cfg.PeerTimeout,
		Logger:      cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("mpiexec: join the queue %s: %w", cfg.QueueDir, err)
	}
	return b, nil
}
