package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIdealAndEfficiency(t *testing.T) {
	tests := []struct {
		name         string
		tasks, slots int
		d            time.Duration
		measured     time.Duration
		ideal        time.Duration
		eff          float64
	}{
		{"full waves", 9, 3, time.Second, 4 * time.Second, 3 * time.Second, 0.75},
		{"a partial last wave counts whole", 10, 3, time.Second, 4 * time.Second, 4 * time.Second, 1},
		{"fewer tasks than slots", 2, 8, 10 * time.Millisecond, 20 * time.Millisecond, 10 * time.Millisecond, 0.5},
		{"one slot", 1000, 1, time.Millisecond, 1250 * time.Millisecond, time.Second, 0.8},
		{"no tasks", 0, 3, time.Second, time.Second, 0, 0},
		{"no slots", 5, 0, time.Second, time.Second, 0, 0},
		{"nothing measured", 3, 3, time.Second, 0, time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ideal := Ideal(tt.tasks, tt.slots, tt.d)
			assert.Equal(t, tt.ideal, ideal)
			assert.InDelta(t, tt.eff, EfficiencyOf(ideal, tt.measured), 1e-12)
		})
	}
}

func TestAutoWaves(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{
		{time.Millisecond, 2000},
		{10 * time.Millisecond, 200},
		{300 * time.Millisecond, 7},
		{time.Second, MinWaves},
		{time.Minute, MinWaves},
		{0, MinWaves},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, AutoWaves(tt.d, DefaultEfficiencyTarget), tt.d)
	}
}

func TestParseParts(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  string
	}{
		{in: "all", want: AllParts},
		{in: DefaultParts, want: AllParts},
		{in: "memory,efficiency", want: []string{PartEfficiency, PartMemory}},
		{in: " Latency , latency", want: []string{PartLatency}},
		{in: "scaling,all", want: AllParts},
		{in: "", err: "empty name"},
		{in: "memory,", err: "empty name"},
		{in: "througput", err: `unknown part "througput"`},
		{in: "memory,disk", err: `unknown part "disk"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseParts(tt.in)
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseDurations(t *testing.T) {
	tests := []struct {
		in   string
		want []time.Duration
		err  string
	}{
		{in: DefaultEfficiencyDurations, want: []time.Duration{time.Millisecond, 10 * time.Millisecond, time.Second}},
		{in: "500us, 2s", want: []time.Duration{500 * time.Microsecond, 2 * time.Second}},
		{in: "", err: `duration ""`},
		{in: "10", err: `duration "10"`},
		{in: "1ms,fast", err: `duration "fast"`},
		{in: "0s", err: "want more than 0"},
		{in: "-1ms", err: "want more than 0"},
		{in: "1ms,,2ms", err: `duration ""`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDurations(tt.in)
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseCounts(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		err  string
	}{
		{in: DefaultScaleNP, want: []int{1, 2, 4, 8}},
		{in: " 8 ,2", want: []int{8, 2}},
		{in: "100000", want: []int{100000}},
		{in: "", err: "not a whole number"},
		{in: "2,x", err: `count "x": not a whole number`},
		{in: "1.5", err: "not a whole number"},
		{in: "0", err: "want at least 1"},
		{in: "4,-2", err: "want at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCounts(tt.in)
			if tt.err != "" {
				assert.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"the default", func(*Config) {}, ""},
		{"one wave count for all", func(c *Config) { c.EfficiencyWaves = []int{5} }, ""},
		{"a wave count per duration", func(c *Config) { c.EfficiencyWaves = []int{5, 4, 3} }, ""},
		{"np 0", func(c *Config) { c.NP = 0 }, "np 0"},
		{"an unknown part", func(c *Config) { c.Parts = []string{"disk"} }, `unknown part "disk"`},
		{"negative tasks", func(c *Config) { c.Tasks = -1 }, "negative"},
		{"negative scale waves", func(c *Config) { c.ScaleWaves = -1 }, "negative"},
		{"a zero duration", func(c *Config) { c.EfficiencyDurations = []time.Duration{0} }, "want more than 0"},
		{"two wave counts for three durations", func(c *Config) { c.EfficiencyWaves = []int{5, 4} }, "2 efficiency wave counts for 3 durations"},
		{"zero waves", func(c *Config) { c.EfficiencyWaves = []int{0} }, "waves 0"},
		{"scaling np 0", func(c *Config) { c.ScaleNP = []int{2, 0} }, "scaling np 0"},
		{"memory count 0", func(c *Config) { c.MemoryPending = []int{0} }, "pending count 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig(4)
			tt.edit(&c)
			err := c.Validate()
			if tt.err == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tt.err)
		})
	}
}

func TestConfigWaves(t *testing.T) {
	c := DefaultConfig(4)
	assert.Equal(t, []int{2000, 200, 3}, []int{c.wavesFor(0), c.wavesFor(1), c.wavesFor(2)})
	c.EfficiencyWaves = []int{7}
	assert.Equal(t, []int{7, 7, 7}, []int{c.wavesFor(0), c.wavesFor(1), c.wavesFor(2)})
	c.EfficiencyWaves = []int{7, 8, 9}
	assert.Equal(t, []int{7, 8, 9}, []int{c.wavesFor(0), c.wavesFor(1), c.wavesFor(2)})
	assert.Equal(t, 100000, c.MaxPending())
	assert.True(t, c.Has(PartScaling))
	c.Parts = []string{PartMemory}
	assert.False(t, c.Has(PartScaling))
}

func TestMachineParsing(t *testing.T) {
	cpuinfo := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)   Gold 6248 CPU @ 2.50GHz\n\nprocessor\t: 1\nmodel name\t: other\n"
	assert.Equal(t, "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", cpuModel([]byte(cpuinfo)))
	assert.Empty(t, cpuModel([]byte("processor : 0\n")))

	osRelease := "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"
	assert.Equal(t, "Debian GNU/Linux 12 (bookworm)", osName([]byte(osRelease)))
	assert.Empty(t, osName([]byte("ID=x\n")))

	tests := []struct{ out, want string }{
		{"mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n", "Open MPI 4.1.4"},
		{"mpirun.openmpi (OpenRTE) 4.1.4\n", "Open MPI 4.1.4"},
		{"HYDRA build details:\n    Version:                                 4.0.2\n    Release Date:    ...\n", "MPICH (Hydra) 4.0.2"},
		{"\nIntel(R) MPI Library for Linux* OS, Version 2021.6\n", "Intel(R) MPI Library for Linux* OS, Version 2021.6"},
		{"", ""},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, mpiVersion([]byte(tt.out)), tt.out)
	}
}

func TestFormats(t *testing.T) {
	assert.Equal(t, "1,234,567", group(1234567))
	assert.Equal(t, "999", group(999))
	assert.Equal(t, "-1,000", group(-1000))
	assert.Equal(t, "0", group(0))
	assert.Equal(t, "500 µs", fmtMs(0.5))
	assert.Equal(t, "10 ms", fmtMs(10))
	assert.Equal(t, "1 s", fmtMs(1000))
	assert.Equal(t, "1.5 s", fmtMs(1500))
	assert.Equal(t, "999 µs", fmtMicros(999))
	assert.Equal(t, "1.00 ms", fmtMicros(1000))
	assert.Equal(t, "512 B", fmtBytes(512))
	assert.Equal(t, "2 KiB", fmtBytes(2048))
	assert.Equal(t, "1.5 MiB", fmtBytes(3<<19))
}
