// Package taskfarm runs a file of shell commands as tasks on a rankfarm
// executor: the engine of `rankfarm run`, in the spirit of TACC's launcher,
// disBatch and GNU parallel. Each line is one task; a template line with
// {}-style placeholders makes one task per argument line. A journal beside
// the input records the tasks that finished, so that running the same
// command again after a crash or a walltime kill runs only the rest.
package taskfarm

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/rankfarm/rankfarm/internal/registry"
)

// MaxLine bounds one line of a command or argument file.
const MaxLine = 1 << 20

// Line is one line of input with its 1-based line number.
type Line struct {
	N    int
	Text string
}

// Task is one command of a farm.
type Task struct {
	// Seq numbers the tasks 1, 2, … in input order ({#} in a template).
	Seq int
	// Line is the line number the task comes from: of the command file, or
	// of the argument list when a template is filled from one.
	Line int
	// Cmd is the command line, placeholders filled.
	Cmd string
	// Hash is a hash of Cmd, and Occ counts the tasks before this one with
	// the same Cmd: together they name the task in the journal, so that an
	// edit elsewhere in the input does not change which tasks count as
	// done.
	Hash uint64
	Occ  int
}

// ReadLines reads the lines of r, dropping a final newline and a trailing
// carriage return from each. With commands set, blank lines and lines whose
// first non-blank character is # are skipped; otherwise only blank lines
// are. A line longer than MaxLine is an error.
func ReadLines(r io.Reader, commands bool) ([]Line, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	var out []Line
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSuffix(sc.Text(), "\r")
		trimmed := strings.TrimSpace(text)
		if trimmed == "" || (commands && trimmed[0] == '#') {
			continue
		}
		out = append(out, Line{N: n, Text: text})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d is longer than %d bytes", n+1, MaxLine)
		}
		return nil, err
	}
	return out, nil
}

// Expand makes the tasks of a farm. Without args each command line is one
// task, run as it is. With args each command line is a template, filled
// once per argument line (templates in order, each over every argument);
// a template without any placeholder gets " {}" appended, as GNU parallel
// does. Placeholders:
//
//	{}    the argument line
//	{N}   its Nth column (1-based; "" past the last)
//	{.}   the line without its extension
//	{/}   its base name, {//} its directory, {/.} the base name without extension
//	{#}   the task's number, 1, 2, …
//
// Filled values are quoted for /bin/sh unless raw is set; colsep splits
// columns ("" means runs of blanks).
func Expand(commands, args []Line, colsep string, raw bool) ([]Task, error) {
	var tasks []Task
	seen := make(map[uint64]int)
	add := func(line int, cmd string) {
		h := Hash(cmd)
		occ := seen[h]
		seen[h] = occ + 1
		tasks = append(tasks, Task{Seq: len(tasks) + 1, Line: line, Cmd: cmd, Hash: h, Occ: occ})
	}
	if args == nil {
		for _, c := range commands {
			add(c.N, c.Text)
		}
		return tasks, nil
	}
	for _, c := range commands {
		tmpl, err := parseTemplate(c.Text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", c.N, err)
		}
		for _, a := range args {
			add(a.N, tmpl.fill(a.Text, len(tasks)+1, colsep, raw))
		}
	}
	return tasks, nil
}

// Hash is the hash of a command that names it in the journal (FNV-1a, 64
// bits).
func Hash(cmd string) uint64 {
	h := fnv.New64a()
	_, _ = io.WriteString(h, cmd)
	return h.Sum64()
}

// template is a command line cut into literal text and placeholders.
type template struct {
	parts []tmplPart
}

type tmplPart struct {
	lit  string
	kind byte // 0: literal; 'a' {}, 'c' {N}, '.' {.}, '/' {/}, 'd' {//}, 'b' {/.}, '#' {#}
	col  int
}

func parseTemplate(s string) (template, error) {
	var t template
	lit := 0
	found := false
	for i := 0; i < len(s); i++ {
		if s[i] != '{' {
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			break
		}
		name := s[i+1 : i+end]
		p := tmplPart{}
		switch name {
		case "":
			p.kind = 'a'
		case ".":
			p.kind = '.'
		case "/":
			p.kind = '/'
		case "//":
			p.kind = 'd'
		case "/.":
			p.kind = 'b'
		case "#":
			p.kind = '#'
		default:
			col, err := strconv.Atoi(name)
			if err != nil || name[0] < '0' || name[0] > '9' {
				continue // not a placeholder: literal braces
			}
			if col < 1 {
				return t, fmt.Errorf("placeholder {%s}: columns count from 1", name)
			}
			p.kind, p.col = 'c', col
		}
		if lit < i {
			t.parts = append(t.parts, tmplPart{lit: s[lit:i]})
		}
		t.parts = append(t.parts, p)
		found = true
		lit = i + end + 1
		i = lit - 1
	}
	if lit < len(s) {
		t.parts = append(t.parts, tmplPart{lit: s[lit:]})
	}
	if !found {
		t.parts = append(t.parts, tmplPart{lit: " "}, tmplPart{kind: 'a'})
	}
	return t, nil
}

func (t template) fill(arg string, seq int, colsep string, raw bool) string {
	var b strings.Builder
	var cols []string
	quote := func(v string) string {
		if raw {
			return v
		}
		return registry.ShellQuote(v)
	}
	for _, p := range t.parts {
		switch p.kind {
		case 0:
			b.WriteString(p.lit)
		case 'a':
			b.WriteString(quote(arg))
		case 'c':
			if cols == nil {
				cols = splitColumns(arg, colsep)
			}
			v := ""
			if p.col <= len(cols) {
				v = cols[p.col-1]
			}
			b.WriteString(quote(v))
		case '.':
			b.WriteString(quote(trimExt(arg)))
		case '/':
			b.WriteString(quote(path.Base(arg)))
		case 'd':
			b.WriteString(quote(path.Dir(arg)))
		case 'b':
			b.WriteString(quote(trimExt(path.Base(arg))))
		case '#':
			b.WriteString(strconv.Itoa(seq))
		}
	}
	return b.String()
}

// trimExt drops the extension of the last element of a path.
func trimExt(p string) string {
	ext := path.Ext(p)
	if ext == "" || ext == p || strings.HasSuffix(p, "/"+ext) {
		return p
	}
	return p[:len(p)-len(ext)]
}

func splitColumns(s, sep string) []string {
	if sep == "" {
		return strings.Fields(s)
	}
	return strings.Split(s, sep)
}
