package schemas

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Versioned view definitions (docs/architecture.md, "Versioned view
// definitions"). A view's configured name is its logical name: what REST,
// /v1/views and the analyst SQL views (<view>, <view>_1h, …) are called.
// Each definition it had is a version, stored under its own physical name
// (PhysicalName): tables, S3 prefix, manifest, runs rows. While a changed
// definition is computed, the previous one keeps answering; the switch
// happens when the new version is exact.

// VersionState is where a version is in its life.
type VersionState string

const (
	// VersionCurrent answers REST and the logical SQL views; one per view.
	VersionCurrent VersionState = "current"
	// VersionPending is the configured definition while it is computed;
	// it answers REST as soon as a run of it is published, and becomes
	// current at the batch job's switch. At most one per view.
	VersionPending VersionState = "pending"
	// VersionRetired is no longer computed or answered; its storage is
	// collected after batch.removed_view_grace.
	VersionRetired VersionState = "retired"
	// VersionCollected: its storage is gone; the row stays so a version
	// number is never reused.
	VersionCollected VersionState = "collected"
)

// ViewVersion is one stored definition of a view.
type ViewVersion struct {
	View        string // logical name
	Version     int    // 1, 2, …
	Fingerprint string // View.Fingerprint of Definition
	Definition  string // the view's YAML (View.DefinitionYAML)
	State       VersionState
	Since       time.Time // when it entered State
}

// Physical is the physical name of the version.
func (vv ViewVersion) Physical() string { return PhysicalName(vv.View, vv.Version) }

// versionSep separates a view's name from its version number in a physical
// name. View names may not contain it (validateViews), so no configured
// view can take another's version's storage.
const versionSep = "__v"

// PhysicalName is the name every storage path of a version is keyed by:
// version 1 keeps the view's own name (deployments that predate versions
// keep their tables and objects), version n > 1 is <view>__v<n>. It is the
// one place the name is built; storage code takes View.Name, which is the
// physical name in a Versioned configuration.
func PhysicalName(view string, version int) string {
	if version <= 1 {
		return view
	}
	return view + versionSep + strconv.Itoa(version)
}

// Logical returns the view's configured name: Name itself, unless the view
// is a version of a Versioned configuration.
func (v *View) Logical() string {
	if v.logical == "" {
		return v.Name
	}
	return v.logical
}

// Version returns the view's version number (0 outside a Versioned
// configuration).
func (v *View) Version() int { return v.version }

// Pending reports whether the view is the pending version of its logical
// view: computed, answered in REST once a run of it is published, and
// exposed in SQL under its physical name only until the switch.
func (v *View) Pending() bool { return v.pending }

// definitionYAML is what a version stores of a view: its whole definition.
type definitionYAML struct {
	Name        string      `yaml:"name"`
	Stream      string      `yaml:"stream"`
	Granularity Granularity `yaml:"granularity"`
	Dimensions  []string    `yaml:"dimensions,omitempty"`
	Measures    []struct {
		Name  string      `yaml:"name"`
		Type  MeasureType `yaml:"type"`
		Field string      `yaml:"field,omitempty"`
	} `yaml:"measures"`
	Levels    *[]string `yaml:"levels,omitempty"`
	Retention Duration  `yaml:"retention,omitempty"`
}

// DefinitionYAML is the view's definition as a version stores it, under its
// logical name.
func (v *View) DefinitionYAML() string {
	d := definitionYAML{Name: v.Logical(), Stream: v.Stream, Granularity: v.Granularity, Dimensions: v.Dimensions, Levels: v.LevelNames, Retention: v.Retention}
	for _, m := range v.Measures {
		d.Measures = append(d.Measures, struct {
			Name  string      `yaml:"name"`
			Type  MeasureType `yaml:"type"`
			Field string      `yaml:"field,omitempty"`
		}{m.Name, m.Type, m.Field})
	}
	out, err := yaml.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("schemas: encoding view %s: %v", v.Name, err)) // plain types: cannot fail
	}
	return string(out)
}

// VersionsOf returns the versions of a logical view in a Versioned
// configuration, the current one first and the pending one (if any)
// second; outside one, the view itself.
func (c *Config) VersionsOf(logical string) []*View {
	var out []*View
	for _, v := range c.Views {
		if v.Logical() == logical {
			out = append(out, v)
		}
	}
	return out
}

// Logicals returns the logical views in configuration order: the current
// version of each.
func (c *Config) Logicals() []*View {
	var out []*View
	for _, v := range c.Views {
		if !v.pending {
			out = append(out, v)
		}
	}
	return out
}

// Versioned returns a copy of the configuration whose Views are the views
// to compute: for each configured view, its current version (rebuilt from
// its stored definition when the configured one differs) and, while the
// configured definition is a pending version, that one too — each named by
// its physical name. A view with no stored version (before the first
// migration) is itself, version 1. It fails when a configured definition
// is neither the current nor the pending version: tandem migrate has not
// registered it yet.
func (c *Config) Versioned(versions []ViewVersion) (*Config, error) {
	byView := map[string][]ViewVersion{}
	for _, vv := range versions {
		byView[vv.View] = append(byView[vv.View], vv)
	}
	out := *c
	out.Views = nil
	for _, v := range c.Views {
		var cur, pend *ViewVersion
		for i, vv := range byView[v.Name] {
			switch vv.State {
			case VersionCurrent:
				cur = &byView[v.Name][i]
			case VersionPending:
				pend = &byView[v.Name][i]
			}
		}
		fp := v.Fingerprint()
		switch {
		case cur == nil:
			out.Views = append(out.Views, v.as(v.Name, 1, false))
		case cur.Fingerprint == fp:
			out.Views = append(out.Views, v.as(cur.Physical(), cur.Version, false))
		case pend != nil && pend.Fingerprint == fp:
			old, err := c.rebuild(*cur)
			if err != nil {
				return nil, err
			}
			out.Views = append(out.Views, old, v.as(pend.Physical(), pend.Version, true))
		default:
			return nil, fmt.Errorf("view %s: its configured definition (fingerprint %s) is not a version of it yet (current: version %d, fingerprint %s): run tandem migrate first, which registers it as a new version",
				v.Name, fp, cur.Version, cur.Fingerprint)
		}
	}
	return &out, nil
}

// as is a copy of the view named physical, version n of its logical view.
func (v *View) as(physical string, n int, pending bool) *View {
	nv := *v
	nv.logical, nv.Name, nv.version, nv.pending = v.Logical(), physical, n, pending
	return &nv
}

// rebuild validates a stored definition against the configured streams.
func (c *Config) rebuild(vv ViewVersion) (*View, error) {
	var v View
	dec := yaml.NewDecoder(strings.NewReader(vv.Definition))
	dec.KnownFields(true)
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("view %s: version %d's stored definition: %w", vv.View, vv.Version, err)
	}
	streams := map[string]*Stream{}
	for _, s := range c.Streams {
		streams[s.Name] = s
	}
	tmp := Config{Streams: c.Streams, Views: []*View{&v}, MaxFutureSkew: c.MaxFutureSkew}
	p := &Problems{}
	tmp.validateViews(p, streams)
	if err := p.Err(); err != nil {
		return nil, fmt.Errorf("view %s: version %d (current, answering while the configured definition is computed) no longer fits the configured streams: %v; "+
			"tandem migrate --recreate %s drops it and computes the configured definition, with a gap until the next batch run", vv.View, vv.Version, err, vv.View)
	}
	if v.Fingerprint() != vv.Fingerprint {
		return nil, fmt.Errorf("view %s: version %d's stored definition has fingerprint %s, its record says %s (the stream's field types changed?): tandem migrate --recreate %s",
			vv.View, vv.Version, v.Fingerprint(), vv.Fingerprint, vv.View)
	}
	return v.as(vv.Physical(), vv.Version, false), nil
}

// VersionView is a stored version as a view named by its physical name.
func (c *Config) VersionView(vv ViewVersion) (*View, error) { return c.rebuild(vv) }

// Switched is a Versioned configuration after its logical view's pending
// version became current: the pending version is current, the previous
// current version (returned, nil when there was none) is gone.
func (c *Config) Switched(logical string) (*Config, *View) {
	out := *c
	out.Views = nil
	var old *View
	hasPending := false
	for _, v := range c.Views {
		if v.Logical() == logical && v.pending {
			hasPending = true
		}
	}
	for _, v := range c.Views {
		switch {
		case v.Logical() != logical || !hasPending:
			out.Views = append(out.Views, v)
		case v.pending:
			out.Views = append(out.Views, v.as(v.Name, v.version, false))
		default:
			old = v
		}
	}
	return &out, old
}
