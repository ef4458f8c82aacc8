// Command resumer is a front end for the end-to-end suite: it runs -n
// memoized tasks that each append their index to DIR/runs, with its
// checkpoint in DIR/ckpt, and prints how many came from the checkpoint. The
// suite kills it mid-run with SIGKILL and starts it again.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/mpiexec"
)

var mark = frontend.NewApp2("resumer.mark", func(_ context.Context, dir string, i int) (int, error) {
	f, err := os.OpenFile(filepath.Join(dir, "runs"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	_, err = f.WriteString(strconv.Itoa(i) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	time.Sleep(200 * time.Microsecond)
	return 3 * i, err
}).Memoize("v1")

func main() {
	mpiexec.Main()
	dir := flag.String("dir", "", "the run's directory")
	n := flag.Int("n", 10000, "tasks")
	flag.Parse()
	ctx := context.Background()
	ex, err := frontend.Start(ctx, frontend.Options{NP: 3, Checkpoint: filepath.Join(*dir, "ckpt")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "resumer:", err)
		os.Exit(1)
	}
	futs := make([]*frontend.Future[int], *n)
	for i := range futs {
		futs[i] = mark.Call(ex, frontend.V(*dir), frontend.V(i))
	}
	for i, f := range futs {
		v, err := f.Get(ctx)
		if err != nil || v != 3*i {
			fmt.Fprintf(os.Stderr, "resumer: task %d: %v, %v\n", i, v, err)
			os.Exit(1)
		}
	}
	memoized := ex.Stats().Memoized
	if err := ex.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "resumer:", err)
		os.Exit(1)
	}
	fmt.Printf("memoized %d\n", memoized)
}
