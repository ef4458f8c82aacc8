// Command workflow is rankfarm's example: plain Go functions declared as
// apps, called from an ordinary program, run on a block of MPI ranks that
// `frontend.Start` launches on this machine (mpirun -np <cores>, re-running
// this same binary as the ranks).
//
// It shows typed futures, a fan-out/reduce dependency graph, an app that
// fails and the error it gives, and an app that fails once and succeeds on a
// retry. It prints its result and its rate.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"time"

	"github.com/rankfarm/rankfarm/frontend"
	"github.com/rankfarm/rankfarm/mpiexec"
)

// Apps are declared at package level, so that the ranks (this same binary,
// re-run by mpirun) know them too.
var (
	// square is a plain function as an app.
	square = frontend.NewApp1("square", func(_ context.Context, x int64) (int64, error) {
		return x * x, nil
	})
	// sum reduces a fan-in of futures.
	sum = frontend.NewApp1("sum", func(_ context.Context, xs []int64) (int64, error) {
		var s int64
		for _, x := range xs {
			s += x
		}
		return s, nil
	})
	// sqrt fails on a negative input.
	sqrt = frontend.NewApp1("sqrt", func(_ context.Context, x int64) (float64, error) {
		if x < 0 {
			return 0, fmt.Errorf("sqrt of negative number %d", x)
		}
		return math.Sqrt(float64(x)), nil
	})
	// flaky fails on its first attempt and succeeds on a retry.
	flaky = frontend.NewApp1("flaky", func(ctx context.Context, x int64) (string, error) {
		if a := frontend.Attempt(ctx); a == 0 {
			return "", errors.New("transient failure on the first attempt")
		}
		return fmt.Sprintf("ok on attempt %d", frontend.Attempt(ctx)), nil
	})
)

func main() {
	mpiexec.Main() // becomes a rank when mpirun started this binary as one
	n := flag.Int("n", 100000, "squares to fan out")
	np := flag.Int("np", 0, "ranks in the block (0 = number of cores)")
	flag.Parse()
	if err := run(*n, *np); err != nil {
		log.Fatal(err)
	}
}

func run(n, np int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ex, err := frontend.Start(ctx, frontend.Options{NP: np})
	if err != nil {
		return err
	}
	defer ex.Close()

	// Fan out n squares, reduce them with one sum: Σ i² for i < n.
	start := time.Now()
	squares := make([]*frontend.Future[int64], n)
	for i := range squares {
		squares[i] = square.Call(ex, frontend.V(int64(i)))
	}
	total := sum.Call(ex, frontend.All(squares))
	// A chain: the root of the sum, through a future passed as an argument.
	root := sqrt.Call(ex, total)
	r, err := root.Get(ctx)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	s, _ := total.Get(ctx)
	want := int64(n-1) * int64(n) * int64(2*n-1) / 6
	fmt.Printf("sum of %d squares = %d (expected %d), sqrt = %.3f\n", n, s, want, r)
	fmt.Printf("%d tasks in %v: %.0f tasks/s\n", n+2, elapsed.Round(time.Millisecond), float64(n+2)/elapsed.Seconds())

	// An error travels back with its message, and a dependant is not run.
	_, err = sqrt.Call(ex, frontend.V(int64(-4))).Get(ctx)
	fmt.Printf("sqrt(-4) failed as it should: %v\n", err)
	bad := sqrt.Call(ex, frontend.V(int64(-1)))
	_, err = square.Call(ex, frontend.V(int64(2)), frontend.After(bad)).Get(ctx)
	var depErr *frontend.DependencyError
	fmt.Printf("its dependant was not run: %v (DependencyError: %v)\n", err, errors.As(err, &depErr))

	// A retry: flaky fails once, then succeeds.
	msg, err := flaky.Call(ex, frontend.V(int64(1)), frontend.Retries(2)).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("flaky: %s\n", msg)
	if s != want {
		fmt.Fprintln(os.Stderr, "wrong sum")
		os.Exit(1)
	}
	return nil
}
