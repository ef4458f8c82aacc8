package taskfarm

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadLines(t *testing.T) {
	in := "echo a\n\n   \n# a comment\n  # indented comment\necho b\r\necho c # not a comment\nlast without newline"
	got, err := ReadLines(strings.NewReader(in), true)
	require.NoError(t, err)
	assert.Equal(t, []Line{{1, "echo a"}, {6, "echo b"}, {7, "echo c # not a comment"}, {8, "last without newline"}}, got)

	// Argument lines keep # and drop only blank lines.
	got, err = ReadLines(strings.NewReader("#1\n\nx y\n"), false)
	require.NoError(t, err)
	assert.Equal(t, []Line{{1, "#1"}, {3, "x y"}}, got)

	got, err = ReadLines(strings.NewReader(""), true)
	require.NoError(t, err)
	assert.Empty(t, got)

	_, err = ReadLines(strings.NewReader("ok\n"+strings.Repeat("x", MaxLine+1)+"\n"), true)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 2")
}

func TestExpandPlaceholders(t *testing.T) {
	tests := []struct {
		name     string
		template string
		arg      string
		colsep   string
		raw      bool
		want     string
	}{
		{"whole line", "gzip -k {}", "data/a.csv", "", false, "gzip -k data/a.csv"},
		{"appended when none", "gzip -k", "a.csv", "", false, "gzip -k a.csv"},
		{"quoted", "echo {}", "it's $HOME; rm -rf /", "", false, `echo 'it'\''s $HOME; rm -rf /'`},
		{"raw", "echo {}", "$HOME | wc", "", true, "echo $HOME | wc"},
		{"columns", "cp {1} {2}; echo {3}", "src dst", "", false, "cp src dst; echo ''"},
		{"colsep", "f {2} {1}", "a b,c", ",", false, "f c 'a b'"},
		{"extension", "convert {} {.}.png", "img/cat.jpg", "", false, "convert img/cat.jpg img/cat.png"},
		{"no extension", "x {.}", "dir.d/file", "", false, "x dir.d/file"},
		{"dot file", "x {.}", "dir/.bashrc", "", false, "x dir/.bashrc"},
		{"base and dir", "x {/} {//} {/.}", "a/b/c.tar.gz", "", false, "x c.tar.gz a/b c.tar"},
		{"base of a bare name", "x {//} {/}", "file", "", false, "x . file"},
		{"number", "run --seed {#} {}", "x", "", false, "run --seed 1 x"},
		{"literal braces stay", "awk '{print $1}' {} | sed 's/{a}//'", "f", "", false, "awk '{print $1}' f | sed 's/{a}//'"},
		{"unclosed brace", "echo {} {", "x", "", false, "echo x {"},
		{"repeated", "{}{}{1}", "ab", "", false, "ababab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tasks, err := Expand([]Line{{N: 1, Text: tt.template}}, []Line{{N: 4, Text: tt.arg}}, tt.colsep, tt.raw)
			require.NoError(t, err)
			require.Len(t, tasks, 1)
			assert.Equal(t, tt.want, tasks[0].Cmd)
			assert.Equal(t, 4, tasks[0].Line, "the argument's line")
		})
	}
	_, err := Expand([]Line{{N: 3, Text: "echo {0}"}}, []Line{{N: 1, Text: "x"}}, "", false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 3")
}

func TestExpandTasks(t *testing.T) {
	// Without arguments lines run as they are: {} is left alone.
	tasks, err := Expand([]Line{{1, "find . -exec ls {} ;"}, {3, "true"}, {4, "true"}}, nil, "", false)
	require.NoError(t, err)
	require.Len(t, tasks, 3)
	assert.Equal(t, "find . -exec ls {} ;", tasks[0].Cmd)
	assert.Equal(t, []int{1, 2, 3}, []int{tasks[0].Seq, tasks[1].Seq, tasks[2].Seq})
	assert.Equal(t, 3, tasks[1].Line)
	// The same command twice: one hash, occurrences 0 and 1.
	assert.Equal(t, tasks[1].Hash, tasks[2].Hash)
	assert.Equal(t, []int{0, 0, 1}, []int{tasks[0].Occ, tasks[1].Occ, tasks[2].Occ})
	assert.Equal(t, Hash("true"), tasks[1].Hash)

	// Templates × arguments, templates in order, {#} counting across.
	tasks, err = Expand([]Line{{1, "a {} {#}"}, {2, "b {}"}}, []Line{{1, "x"}, {2, "y"}}, "", false)
	require.NoError(t, err)
	var cmds []string
	for _, tk := range tasks {
		cmds = append(cmds, tk.Cmd)
	}
	assert.Equal(t, []string{"a x 1", "a y 2", "b x", "b y"}, cmds)

	// An empty argument list makes no task.
	tasks, err = Expand([]Line{{1, "a {}"}}, []Line{}, "", false)
	require.NoError(t, err)
	assert.Empty(t, tasks)
}

// TestJournalKeysSurviveEdits checks that inserting a line before others
// keeps their journal keys: a task is named by its command and occurrence,
// not its position.
func TestJournalKeysSurviveEdits(t *testing.T) {
	before, err := Expand([]Line{{1, "x"}, {2, "y"}, {3, "x"}}, nil, "", false)
	require.NoError(t, err)
	after, err := Expand([]Line{{1, "new"}, {2, "x"}, {3, "y"}, {4, "x"}}, nil, "", false)
	require.NoError(t, err)
	key := func(t Task) Key { return Key{t.Hash, t.Occ} }
	assert.Equal(t, key(before[0]), key(after[1]))
	assert.Equal(t, key(before[1]), key(after[2]))
	assert.Equal(t, key(before[2]), key(after[3]))
}
