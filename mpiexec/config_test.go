package mpiexec

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c Config) {
			assert.Zero(t, c.Slots)
			assert.Zero(t, c.Spin)
			assert.False(t, c.NoDoorbells)
		}},
		{name: "counts and durations", env: map[string]string{EnvSlots: "4", EnvFanout: "16", EnvSpin: "50us", EnvMaxSleep: "2ms"},
			check: func(t *testing.T, c Config) {
				assert.Equal(t, 4, c.Slots)
				assert.Equal(t, 16, c.Fanout)
				assert.Equal(t, 50*time.Microsecond, c.Spin)
				assert.Equal(t, 2*time.Millisecond, c.MaxSleep)
			}},
		{name: "doorbells off", env: map[string]string{EnvDoorbells: "off"},
			check: func(t *testing.T, c Config) { assert.True(t, c.NoDoorbells) }},
		{name: "doorbells on", env: map[string]string{EnvDoorbells: "on"},
			check: func(t *testing.T, c Config) { assert.False(t, c.NoDoorbells) }},
		{name: "doorbells garbage", env: map[string]string{EnvDoorbells: "maybe"}, wantErr: EnvDoorbells},
		{name: "net wake-ups off", env: map[string]string{EnvNetWake: "off"},
			check: func(t *testing.T, c Config) { assert.True(t, c.NoNetWake) }},
		{name: "net wake-ups garbage", env: map[string]string{EnvNetWake: "no"}, wantErr: EnvNetWake},
		{name: "finalize timeout", env: map[string]string{EnvFinalizeTimeout: "20s"},
			check: func(t *testing.T, c Config) { assert.Equal(t, 20*time.Second, c.FinalizeTimeout) }},
		{name: "negative count", env: map[string]string{EnvSlots: "-1"}, wantErr: EnvSlots},
		{name: "huge count", env: map[string]string{EnvPrefetch: "99999999"}, wantErr: EnvPrefetch},
		{name: "bad duration", env: map[string]string{EnvSpin: "fast"}, wantErr: EnvSpin},
		{name: "duration too long", env: map[string]string{EnvMaxSleep: "2m"}, wantErr: EnvMaxSleep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{EnvSlots, EnvPrefetch, EnvMaxPrefetch, EnvFanout, EnvSpin, EnvMaxSleep, EnvReconnectGrace, EnvDoorbells} {
				t.Setenv(k, "")
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := ConfigFromEnv()
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}
