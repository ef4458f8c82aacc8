package monitor

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// Server serves the dashboard of one monitoring database: the page at /,
// and its data as JSON at /api/snapshot?run=N (the latest run without N).
type Server struct {
	r   *Reader
	log *slog.Logger

	mu    sync.Mutex // one snapshot at a time; the cache
	cache map[int64]cached
}

type cached struct {
	at   time.Time
	body []byte
}

// minRefresh is the least time between two reads of the database for the
// same run: many open pages cost one read.
const minRefresh = 500 * time.Millisecond

// NewServer returns the dashboard of r's database.
func NewServer(r *Reader, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{r: r, log: log, cache: make(map[int64]cached)}
}

// Handler returns the dashboard's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(sub))
	mux.HandleFunc("GET /api/snapshot", s.snapshot)
	return mux
}

func (s *Server) snapshot(w http.ResponseWriter, req *http.Request) {
	run := int64(0)
	if q := req.URL.Query().Get("run"); q != "" {
		n, err := strconv.ParseInt(q, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "run: want a run number", http.StatusBadRequest)
			return
		}
		run = n
	}
	body, err := s.read(req.Context(), run)
	if err != nil {
		s.log.Warn("dashboard: read the database", "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

func (s *Server) read(ctx context.Context, run int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cache[run]; ok && time.Since(c.at) < minRefresh {
		return c.body, nil
	}
	snap, err := s.r.Snapshot(ctx, run)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(snap)
	if err != nil {
		return nil, err
	}
	s.cache[run] = cached{at: time.Now(), body: body}
	return body, nil
}

// Serve serves the dashboard on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(shut)
		case <-done:
		}
	}()
	err := srv.Serve(ln)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
