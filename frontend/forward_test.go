package frontend

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestForwardTuning(t *testing.T) {
	t.Setenv("RANKFARM_NET_WAKE", "off")
	t.Setenv("RANKFARM_LOG", "debug")
	t.Setenv("RANKFARM_EXEC", "0") // set by the executor: its value wins
	t.Setenv("OMPI_MCA_btl", "self,tcp")
	// A stale identity of another run's block.
	t.Setenv("RANKFARM_QUEUE", "/old/queue")
	t.Setenv("RANKFARM_TLS_FINGERPRINT", "00")
	t.Setenv("RANKFARM_ADDR", "10.0.0.1:1")
	env := map[string]string{EnvExec: "1"}
	forwardTuning(env)
	assert.Equal(t, "off", env["RANKFARM_NET_WAKE"])
	assert.Equal(t, "debug", env["RANKFARM_LOG"])
	assert.Equal(t, "1", env[EnvExec])
	assert.NotContains(t, env, "OMPI_MCA_btl", "only rankfarm's own settings")
	for _, k := range []string{"RANKFARM_QUEUE", "RANKFARM_TLS_FINGERPRINT", "RANKFARM_ADDR"} {
		assert.NotContains(t, env, k, "a block's identity is never forwarded")
	}
}
