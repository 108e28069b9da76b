package schemas

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas/schemastest"
)

func noEnv(string) (string, bool) { return "", false }

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadFile("../tandem.example.yaml")
	require.NoError(t, err)
	require.Len(t, cfg.Streams, 1)
	v := cfg.View("pageviews_by_country")
	require.NotNil(t, v)
	require.Equal(t, "1m", v.Granularity.String())
	require.Same(t, cfg.Stream("pageviews"), v.StreamDef())
	require.Equal(t, "tandem", cfg.S3.AccessKey, "default from ${S3_ACCESS_KEY:-tandem}")
	require.Equal(t, int64(10000), cfg.ChunkSize)
	require.Equal(t, 2, v.StreamDef().FieldIndex("country"))
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got := string(ExpandEnv([]byte("${A} ${B} ${B:-def} ${EMPTY:-e} $A ${A:-z}"), lookup))
	require.Equal(t, "x  def e $A x", got)
}

// base is a small valid config each case breaks in one way.
const base = schemastest.ConfigBase

// TestConfigRejects: the vocabulary's and the shared settings' problems,
// each with its line. The components' sections are checked by their
// packages (and the whole file by config.TestConfigRejects).
func TestConfigRejects(t *testing.T) {
	cases := schemastest.VocabularyRejects
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			src := strings.Replace(base, tc.From, tc.To, 1)
			require.NotEqual(t, base, src, "case must change the config")
			_, err := Parse("t.yaml", []byte(src), noEnv)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.Want)
			require.True(t, strings.HasPrefix(err.Error(), "t.yaml:"), err.Error())
		})
	}
	_, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
}

// TestViewLevels: views[].levels defaults to 1h and 1d where they are
// coarser than and a multiple of the view's granularity, may be set (kept
// coarsest first), and [] turns levels off.
func TestViewLevels(t *testing.T) {
	h, d := Granularity(time.Hour), Granularity(24*time.Hour)
	for _, tc := range []struct {
		name, from, to string
		want           []Granularity
	}{
		{"default, 1m view", "", "", []Granularity{d, h}},
		{"default, 6h view", "granularity: 1m", "granularity: 6h", []Granularity{d}},
		{"default, 1d view", "granularity: 1m", "granularity: 1d", nil},
		{"set", "dimensions: [c]", "dimensions: [c]\n    levels: [15m, 1d]", []Granularity{d, Granularity(15 * time.Minute)}},
		{"off", "dimensions: [c]", "dimensions: [c]\n    levels: []", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("t.yaml", []byte(strings.Replace(base, tc.from, tc.to, 1)), noEnv)
			require.NoError(t, err)
			got := cfg.View("v").Levels()
			if len(tc.want) == 0 {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestConfigFileMissing(t *testing.T) {
	_, err := LoadFile("does-not-exist.yaml")
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestDoubleUnderscoreNamesReserved: tandem derives a measure's SQL state
// columns from its name with __, so no measure or dimension may have one.
func TestDoubleUnderscoreNamesReserved(t *testing.T) {
	example, err := os.ReadFile("../tandem.example.yaml")
	require.NoError(t, err)
	yaml := strings.Replace(string(example), "{ name: users,       type: distinct,  field: user_id }", "{ name: users__uniq_keys, type: distinct, field: user_id }", 1)
	require.NotEqual(t, string(example), yaml)
	_, err = Parse("t.yaml", []byte(yaml), func(string) (string, bool) { return "", false })
	require.ErrorContains(t, err, `measure name "users__uniq_keys"`)
	require.ErrorContains(t, err, "__")
}

// TestSectionsLeftToTheirOwners: Parse keeps each component's section as
// read, without judging it, and takes ingest.max_future_skew for the
// vocabulary.
func TestSectionsLeftToTheirOwners(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(base+"ingest: { max_future_skew: 2h, whatever: 1 }\nserve: { max_result_rows: 0 }\n"), noEnv)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, cfg.MaxFutureSkew.D())
	var into struct {
		Listen string `yaml:"listen"`
	}
	errs := cfg.Ingest.Decode(&into)
	require.Len(t, errs, 1)
	require.Equal(t, `t.yaml:22: field "whatever" not recognised`, errs[0].Error(), "max_future_skew is not the section's")
	_, err = Parse("t.yaml", []byte(base+"ingest: { max_future_skew: soon }\n"), noEnv)
	require.ErrorContains(t, err, `t.yaml:22: "soon" is not a duration`)
	d, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
	require.Equal(t, DefaultMaxFutureSkew, d.MaxFutureSkew)
}
