// Command sleeper is a front end for the end-to-end suite: it starts a block
// and keeps every worker busy with long sleep tasks until it is signalled.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/mpiexec"
)

func main() {
	mpiexec.Main()
	ctx := context.Background()
	ex, err := frontend.Start(ctx, frontend.Options{NP: 3})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sleeper:", err)
		os.Exit(1)
	}
	defer ex.Close()
	var futs []*frontend.Future[struct{}]
	for range 8 {
		futs = append(futs, frontend.Sleep.Call(ex, frontend.V(120.0)))
	}
	fmt.Println("sleeping")
	for _, f := range futs {
		_, _ = f.Get(ctx)
	}
	time.Sleep(time.Minute)
}
