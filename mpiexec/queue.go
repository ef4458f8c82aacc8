package mpiexec

import (
	"context"
	"fmt"
	"time"

	"github.com/rankfarm/rankfarm/internal/qlink"
	"github.com/rankfarm/rankfarm/serialize"
)

// joinQueue makes rank 0 a block of the shared-filesystem queue in
// cfg.QueueDir: the link to the front end when no socket reaches it. It
// waits up to 30 s for a front end to open the queue.
// hello introduces the block (see blockHello).
func joinQueue(ctx context.Context, cfg Config, hello serialize.Hello) (*qlink.Block, error) {
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := qlink.Join(jctx, cfg.QueueDir, qlink.BlockOptions{
		Hello:       hello,
		PeerTimeout: cfg.PeerTimeout,
		Logger:      cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("mpiexec: join the queue %s: %w", cfg.QueueDir, err)
	}
	return b, nil
}
