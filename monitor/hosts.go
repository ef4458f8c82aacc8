package monitor

import (
	"context"
	"database/sql"
	"encoding/json"
)

// Node is one host of a block as the block reported it: the ranks on it and
// the sub-masters among them.
type Node struct {
	Host       string `json:"host"`
	Ranks      []int  `json:"ranks"`
	SubMasters []int  `json:"sub_masters,omitempty"`
}

// queryer is what loadHostMap reads through: a database or a transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// hostMap tells the host of a rank of a block: the host its block reported
// for it (block_nodes), else the block's own host (rank 0's).
type hostMap struct {
	block map[hostKey]string
	rank  map[hostKey]map[int32]string
}

type hostKey struct {
	run   int64
	block string
}

// loadHostMap reads the hosts of the blocks of run (every run when run is
// 0).
func loadHostMap(ctx context.Context, db queryer, run int64) (*hostMap, error) {
	h := &hostMap{block: map[hostKey]string{}, rank: map[hostKey]map[int32]string{}}
	rows, err := db.QueryContext(ctx, `SELECT run, block, host FROM blocks WHERE host IS NOT NULL AND (? = 0 OR run = ?)`, run, run)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k hostKey
		var host string
		if err := rows.Scan(&k.run, &k.block, &host); err != nil {
			_ = rows.Close()
			return nil, err
		}
		h.block[k] = host
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = db.QueryContext(ctx, `SELECT run, block, host, ranks FROM block_nodes WHERE (? = 0 OR run = ?)`, run, run)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k hostKey
		var host, ranks string
		if err := rows.Scan(&k.run, &k.block, &host, &ranks); err != nil {
			return nil, err
		}
		var rs []int32
		if json.Unmarshal([]byte(ranks), &rs) != nil {
			continue // a damaged row: the block's host stands in
		}
		m := h.rank[k]
		if m == nil {
			m = map[int32]string{}
			h.rank[k] = m
		}
		for _, r := range rs {
			m[r] = host
		}
	}
	return h, rows.Err()
}

// host returns the host of rank of block in run, "" when unknown.
func (h *hostMap) host(run int64, block string, rank int32) string {
	k := hostKey{run, block}
	if host, ok := h.rank[k][rank]; ok {
		return host
	}
	return h.block[k]
}
