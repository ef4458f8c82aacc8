package rankpool

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLayoutShapes(t *testing.T) {
	type want struct {
		role     Role
		parent   int
		children []int
	}
	tests := []struct {
		name   string
		nodeOf []int
		size   int
		want   []want // indexed by rank
	}{
		{
			name: "one rank runs tasks itself",
			size: 1,
			want: []want{{RoleWorker, Upstream, nil}},
		},
		{
			name: "two ranks on one node",
			size: 2,
			want: []want{{RoleScheduler, Upstream, []int{1}}, {RoleWorker, 0, nil}},
		},
		{
			name: "three ranks on one node",
			size: 3,
			want: []want{{RoleScheduler, Upstream, []int{1, 2}}, {RoleWorker, 0, nil}, {RoleWorker, 0, nil}},
		},
		{
			name:   "three ranks, explicit single node",
			nodeOf: []int{7, 7, 7},
			size:   3,
			want:   []want{{RoleScheduler, Upstream, []int{1, 2}}, {RoleWorker, 0, nil}, {RoleWorker, 0, nil}},
		},
		{
			name:   "two ranks on two nodes: a lone rank is a worker of rank 0",
			nodeOf: []int{0, 1},
			size:   2,
			want:   []want{{RoleScheduler, Upstream, []int{1}}, {RoleWorker, 0, nil}},
		},
		{
			name:   "three ranks, rank 0 alone on its node",
			nodeOf: []int{0, 1, 1},
			size:   3,
			want:   []want{{RoleScheduler, Upstream, []int{1}}, {RoleSubMaster, 0, []int{2}}, {RoleWorker, 1, nil}},
		},
		{
			name:   "uneven nodes 3+1+4",
			nodeOf: []int{0, 0, 0, 1, 2, 2, 2, 2},
			size:   8,
			want: []want{
				{RoleScheduler, Upstream, []int{1, 2, 3, 4}},
				{RoleWorker, 0, nil},
				{RoleWorker, 0, nil},
				{RoleWorker, 0, nil},
				{RoleSubMaster, 0, []int{5, 6, 7}},
				{RoleWorker, 4, nil},
				{RoleWorker, 4, nil},
				{RoleWorker, 4, nil},
			},
		},
		{
			name:   "nodes not contiguous in rank order",
			nodeOf: []int{5, 9, 3, 9, 5, 3, 3},
			size:   7,
			want: []want{
				{RoleScheduler, Upstream, []int{1, 2, 4}},
				{RoleSubMaster, 0, []int{3}},
				{RoleSubMaster, 0, []int{5, 6}},
				{RoleWorker, 1, nil},
				{RoleWorker, 0, nil},
				{RoleWorker, 2, nil},
				{RoleWorker, 2, nil},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, tt.want, tt.size)
			for r, w := range tt.want {
				p := Layout(r, tt.size, tt.nodeOf, 0)
				assert.Equal(t, r, p.Rank, "rank %d", r)
				assert.Equal(t, tt.size, p.Size, "rank %d", r)
				assert.Equal(t, w.role, p.Role, "rank %d role", r)
				assert.Equal(t, w.parent, p.Parent, "rank %d parent", r)
				assert.Equal(t, w.children, p.Children, "rank %d children", r)
			}
		})
	}
}

// checkTree asserts that the places Layout gives every rank form one tree
// rooted at rank 0: each non-zero rank has exactly one parent, which lists
// it as a child, children are sorted, and only relays have children.
func checkTree(t *testing.T, size int, nodeOf []int) {
	t.Helper()
	places := make([]Place, size)
	for r := range size {
		places[r] = Layout(r, size, nodeOf, 0)
	}
	parents := make([]int, size) // how many ranks list r as a child
	for r, p := range places {
		require.True(t, isSortedUnique(p.Children), "size %d rank %d children %v", size, r, p.Children)
		if p.Role == RoleWorker {
			require.Empty(t, p.Children, "size %d worker %d has children", size, r)
		} else {
			require.NotEmpty(t, p.Children, "size %d relay %d has no children", size, r)
		}
		for _, c := range p.Children {
			require.NotEqual(t, 0, c)
			parents[c]++
			require.Equal(t, r, places[c].Parent, "size %d: rank %d lists %d, whose parent is %d", size, r, c, places[c].Parent)
		}
	}
	require.Equal(t, Upstream, places[0].Parent)
	require.Zero(t, parents[0])
	for r := 1; r < size; r++ {
		require.Equal(t, 1, parents[r], "size %d rank %d", size, r)
		// The tree has two levels: a parent is rank 0 or a child of rank 0.
		par := places[r].Parent
		require.True(t, par == 0 || places[par].Parent == 0, "size %d rank %d too deep", size, r)
		if nodeOf != nil && par != 0 {
			require.Equal(t, nodeOf[par], nodeOf[r], "a sub-master serves its own node")
		}
	}
}

func isSortedUnique(s []int) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

func TestLayoutIsATree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{1, 2, 3, 4, 5, 7, 8, 16, 63, 64, 65, 129, 1000, 3000}
	for _, size := range sizes {
		checkTree(t, size, nil)
		nodeCounts := []int{1, 2, 3, 17, size}
		for _, nodes := range nodeCounts {
			// Contiguous blocks of uneven size.
			contiguous := make([]int, size)
			for r := range size {
				contiguous[r] = r * r * nodes / (size * size) // growing blocks
			}
			checkTree(t, size, contiguous)
			// Random, not contiguous in rank order, arbitrary node ids.
			scattered := make([]int, size)
			for r := range scattered {
				scattered[r] = 1000 - 7*rng.IntN(nodes)
			}
			checkTree(t, size, scattered)
		}
	}
}

func TestLayoutRejectsBadInput(t *testing.T) {
	tests := []struct {
		name   string
		rank   int
		size   int
		nodeOf []int
	}{
		{"empty world", 0, 0, nil},
		{"negative rank", -1, 4, nil},
		{"rank past the end", 4, 4, nil},
		{"short node map", 0, 4, []int{0, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Error(t, CheckLayout(tt.rank, tt.size, tt.nodeOf))
			require.Panics(t, func() { Layout(tt.rank, tt.size, tt.nodeOf, 0) })
		})
	}
}

func TestRoleString(t *testing.T) {
	for role, want := range map[Role]string{RoleWorker: "worker", RoleScheduler: "scheduler", RoleSubMaster: "sub-master", Role(9): "Role(9)"} {
		assert.Equal(t, want, role.String())
	}
}
