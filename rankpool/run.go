package rankpool

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rankfarm/rankfarm/serialize"
)

// ErrTransportClosed reports that a rank's inbox closed before its role was
// done.
var ErrTransportClosed = errors.New("rankpool: transport closed")

// Transport moves one rank's messages. Send must not block for long (it
// queues internally) and takes ownership of m; Inbox delivers everything
// addressed to this rank, including what comes from Upstream.
type Transport interface {
	// Send queues m for rank to (Upstream for the front end).
	Send(to int, m serialize.Message) error
	// Inbox delivers the messages addressed to this rank.
	Inbox() <-chan Envelope
}

// Runner runs one task on a worker and returns its result. It must set the
// result's ID and recover its own panics; it should return soon after ctx
// ends, since Run waits for running tasks before it returns.
type Runner func(ctx context.Context, t serialize.Task) serialize.Result

// maxDrain bounds how many waiting envelopes one round of Run absorbs before
// it sends, so a flood cannot hold messages back for ever.
const maxDrain = 4096

// Run drives rank p's role until the role is Done (a clean shutdown: it
// returns nil), ctx ends (it returns ctx.Err()) or the transport fails.
//
// Each round it waits for one envelope (or, on a worker, one finished task),
// then absorbs every envelope and result already waiting without blocking,
// and only then asks the state machine what to send: under load many results
// share a message, and when idle a result leaves at once. A worker runs up to
// cfg.Slots tasks at once on long-lived goroutines and sets each result's
// Rank to its own; it cancels and waits for them before it returns.
func Run(ctx context.Context, p Place, tr Transport, run Runner, cfg Config) error {
	cfg = cfg.withDefaults()
	switch {
	case p.Role == RoleWorker:
		if run == nil {
			return fmt.Errorf("rankpool: rank %d: a worker needs a Runner", p.Rank)
		}
		return runWorker(ctx, p, tr, run, cfg)
	case p.Role.IsRelay():
		return runRelay(ctx, p, tr, cfg)
	}
	return fmt.Errorf("rankpool: rank %d: unknown role %v", p.Rank, p.Role)
}

func send(tr Transport, p Place, out []Envelope) error {
	for i, e := range out {
		if err := tr.Send(e.To, e.Msg); err != nil {
			return fmt.Errorf("rankpool: rank %d: send %v to %d: %w", p.Rank, e.Msg.Kind(), e.To, err)
		}
		out[i] = Envelope{}
	}
	return nil
}

func closed(p Place) error {
	return fmt.Errorf("rankpool: rank %d (%v): %w", p.Rank, p.Role, ErrTransportClosed)
}

func runRelay(ctx context.Context, p Place, tr Transport, cfg Config) error {
	r := NewRelay(p, cfg)
	inbox := tr.Inbox()
	var out []Envelope
	for {
		out = r.Ready(out[:0])
		if err := send(tr, p, out); err != nil {
			return err
		}
		if r.Done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-inbox:
			if !ok {
				return closed(p)
			}
			r.Step(e)
		}
	drain:
		for range maxDrain {
			select {
			case e, ok := <-inbox:
				if !ok {
					return closed(p)
				}
				r.Step(e)
			default:
				break drain
			}
		}
	}
}

func runWorker(ctx context.Context, p Place, tr Transport, run Runner, cfg Config) error {
	w := NewWorker(p, cfg)
	rank := int32(p.Rank)

	// Slots long-lived goroutines run the tasks. Next hands out a task only
	// when a slot is free, so at most Slots tasks are sent or running and
	// neither channel ever blocks its sender.
	tctx, cancel := context.WithCancel(ctx)
	tasks := make(chan serialize.Task, cfg.Slots)
	results := make(chan serialize.Result, cfg.Slots)
	var wg sync.WaitGroup
	for range cfg.Slots {
		wg.Go(func() {
			for t := range tasks {
				if tctx.Err() != nil {
					continue // the rank is stopping: nobody waits for this one
				}
				results <- run(tctx, t)
			}
		})
	}
	defer func() {
		close(tasks)
		cancel()
		wg.Wait()
	}()

	finished := func(r serialize.Result) {
		r.Rank = rank
		w.Finished(r)
	}
	inbox := tr.Inbox()
	var out []Envelope
	for {
		for {
			t, ok := w.Next()
			if !ok {
				break
			}
			tasks <- t
		}
		out = w.Ready(out[:0])
		if err := send(tr, p, out); err != nil {
			return err
		}
		if w.Done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-results:
			finished(r)
		case e, ok := <-inbox:
			if !ok {
				return closed(p)
			}
			w.Step(e)
		}
	drain:
		for range maxDrain {
			select {
			case r := <-results:
				finished(r)
			case e, ok := <-inbox:
				if !ok {
					return closed(p)
				}
				w.Step(e)
			default:
				break drain
			}
		}
	}
}
