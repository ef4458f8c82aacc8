// Package registry holds the apps an executor can run, by name. The front end
// registers each typed app here when it is declared (frontend.NewApp1 and its
// kin), and the executor looks apps up here when a task arrives: since the
// front end re-runs its own binary as the ranks, both sides hold the same
// names.
package registry

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Handler runs one call of an app. args is a msgpack array with one element
// per argument; the handler returns its msgpack-encoded result.
type Handler func(ctx context.Context, args []byte) ([]byte, error)

// Registry maps app names to handlers. It is safe for concurrent use.
type Registry struct {
	mu   sync.RWMutex
	apps map[string]Handler
}

// Default is the registry that frontend apps register in and that the
// executor serves.
var Default = New()

// New returns an empty registry.
func New() *Registry { return &Registry{apps: make(map[string]Handler)} }

// Register adds an app. It fails when the name is empty or already taken.
func (r *Registry) Register(name string, h Handler) error {
	if name == "" {
		return fmt.Errorf("registry: an app needs a name")
	}
	if h == nil {
		return fmt.Errorf("registry: app %q has no handler", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.apps[name]; ok {
		return fmt.Errorf("registry: app %q is registered twice", name)
	}
	r.apps[name] = h
	return nil
}

// Lookup returns the handler registered under name.
func (r *Registry) Lookup(name string) (Handler, bool) {
	r.mu.RLock()
	h, ok := r.apps[name]
	r.mu.RUnlock()
	return h, ok
}

// Names lists the registered apps in order.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.apps))
	for n := range r.apps {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TaskInfo describes the task a handler is running.
type TaskInfo struct {
	ID      uint64 // the task's id in its run
	App     string // the app's name
	Attempt int    // 0 on the first try, then 1, 2, … on retries
	Rank    int    // the world rank of the worker
}

type infoKey struct{}

// WithInfo returns ctx carrying info, for the handler to read.
func WithInfo(ctx context.Context, info TaskInfo) context.Context {
	return context.WithValue(ctx, infoKey{}, info)
}

// Info returns the TaskInfo that ctx carries, and whether it carries one.
func Info(ctx context.Context) (TaskInfo, bool) {
	info, ok := ctx.Value(infoKey{}).(TaskInfo)
	return info, ok
}
