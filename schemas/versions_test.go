package schemas

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestVersioned: the views a Versioned configuration computes per stored
// versions — the configured view alone without versions or when it is the
// current one; the current version rebuilt from its stored YAML beside the
// pending one when the configured definition is pending; an error naming
// tandem migrate when it is neither; Switched makes the pending one current.
func TestVersioned(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(base), noEnv)
	require.NoError(t, err)
	v1 := cfg.View("v")
	changed, err := Parse("t.yaml", []byte(strings.Replace(base, "granularity: 1m\n    dimensions: [c]", "granularity: 5m\n    dimensions: []", 1)), noEnv)
	require.NoError(t, err)
	v2 := changed.View("v")
	now := time.Now()
	cur := ViewVersion{View: "v", Version: 1, Fingerprint: v1.Fingerprint(), Definition: v1.DefinitionYAML(), State: VersionCurrent, Since: now}
	pend := ViewVersion{View: "v", Version: 2, Fingerprint: v2.Fingerprint(), Definition: v2.DefinitionYAML(), State: VersionPending, Since: now}

	eff, err := cfg.Versioned(nil)
	require.NoError(t, err)
	require.Len(t, eff.Views, 1)
	require.Equal(t, "v", eff.Views[0].Name)
	require.Equal(t, 1, eff.Views[0].Version())

	eff, err = cfg.Versioned([]ViewVersion{cur, pend})
	require.NoError(t, err)
	require.Len(t, eff.Views, 1, "configured as the current version: the pending one is not computed")

	eff, err = changed.Versioned([]ViewVersion{cur, pend})
	require.NoError(t, err)
	require.Len(t, eff.Views, 2)
	old, p := eff.Views[0], eff.Views[1]
	require.Equal(t, "v", old.Name)
	require.False(t, old.Pending())
	require.Equal(t, v1.Fingerprint(), old.Fingerprint(), "rebuilt from the stored definition")
	require.Equal(t, "1m", old.Granularity.String())
	require.Equal(t, []string{"c"}, old.Dimensions)
	require.Same(t, changed.Stream("s"), old.StreamDef())
	require.Equal(t, 1, old.MeasureIndex("total"))
	require.Equal(t, "v__v2", p.Name)
	require.Equal(t, "v", p.Logical())
	require.True(t, p.Pending())
	require.Equal(t, "5m", p.Granularity.String())
	require.Equal(t, []*View{old, p}, eff.VersionsOf("v"))
	require.Equal(t, []*View{old}, eff.Logicals())
	require.Equal(t, "v", changed.View("v").Name, "the configuration itself is unchanged")

	post, gone := eff.Switched("v")
	require.Same(t, old, gone)
	require.Len(t, post.Views, 1)
	require.Equal(t, "v__v2", post.Views[0].Name)
	require.False(t, post.Views[0].Pending())

	_, err = changed.Versioned([]ViewVersion{cur})
	require.ErrorContains(t, err, "run tandem migrate first")

	// A stored definition that no longer fits the streams is refused,
	// naming the escape hatch.
	bad := cur
	bad.Definition = strings.Replace(bad.Definition, `field: "n"`, "field: gone", 1)
	require.NotEqual(t, cur.Definition, bad.Definition)
	_, err = changed.Versioned([]ViewVersion{bad, pend})
	require.ErrorContains(t, err, "tandem migrate --recreate v")

	require.Equal(t, "v", PhysicalName("v", 1))
	require.Equal(t, "v__v12", PhysicalName("v", 12))
}
