package rankpool

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFormatRanks(t *testing.T) {
	tests := []struct {
		in   []int
		want string
	}{
		{nil, ""},
		{[]int{5}, "5"},
		{[]int{0, 1, 2, 3}, "0-3"},
		{[]int{0, 1, 2, 3, 8, 10, 11}, "0-3,8,10-11"},
		{[]int{1, 3, 5}, "1,3,5"},
		{[]int{4, 5, 9, 10, 11, 12}, "4-5,9-12"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, FormatRanks(tt.in), "%v", tt.in)
	}
}
