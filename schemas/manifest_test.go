package schemas

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRawKeyRoundTrip(t *testing.T) {
	cases := []struct {
		stream      string
		partition   int32
		first, last int64
	}{
		{"pageviews", 0, 0, 0},
		{"s", 3, 10, 19999},
		{"a_1", math.MaxInt32, math.MaxInt64 - 1, math.MaxInt64},
	}
	r := rand.New(rand.NewPCG(11, 12))
	for range 500 {
		first := r.Int64N(math.MaxInt64)
		cases = append(cases, struct {
			stream      string
			partition   int32
			first, last int64
		}{"s" + string(rune('a'+r.IntN(26))), r.Int32N(math.MaxInt32), first, first + r.Int64N(math.MaxInt64-first)})
	}
	for _, tc := range cases {
		key := RawKey(tc.stream, tc.partition, tc.first, tc.last)
		require.True(t, strings.HasPrefix(key, RawPrefix(tc.stream, tc.partition)))
		s, p, f, l, ok := ParseRawKey(key)
		require.True(t, ok, key)
		require.Equal(t, tc.stream, s)
		require.Equal(t, tc.partition, p)
		require.Equal(t, tc.first, f)
		require.Equal(t, tc.last, l)
	}
	require.Equal(t, "raw/pageviews/partition=2/00000000000000000100-00000000000000000199.parquet", RawKey("pageviews", 2, 100, 199))
	// Keys sort in offset order.
	require.Less(t, RawKey("s", 0, 9, 9), RawKey("s", 0, 10, 10))
}

func TestParseRawKeyRejects(t *testing.T) {
	good := RawKey("s", 1, 0, 9)
	for _, key := range []string{
		"",
		"raw/../x",
		"raw/s/partition=1/../../../etc/passwd",
		"raw/s/../t/partition=1/00000000000000000000-00000000000000000009.parquet",
		"raw/../partition=1/00000000000000000000-00000000000000000009.parquet",
		"/" + good,
		"x/" + good,
		good + "/",
		good + "\n",
		strings.TrimSuffix(good, ".parquet"),
		strings.Replace(good, ".parquet", ".json", 1),
		strings.Replace(good, "raw/s/", "raw/S/", 1),
		strings.Replace(good, "raw/s/", "raw/1s/", 1),
		strings.Replace(good, "partition=1", "partition=-1", 1),
		strings.Replace(good, "partition=1", "partition=01", 1),                   // RawKey writes no leading zeros
		strings.Replace(good, "partition=1", "partition=2147483648", 1),           // over int32
		strings.Replace(good, "partition=1", "partition=99999999999999999999", 1), // over int64
		"raw/s/partition=1/00000000000000000009-00000000000000000000.parquet",     // last < first
		"raw/s/partition=1/99999999999999999999-99999999999999999999.parquet",     // over int64
		"raw/s/partition=1/0000000000000000000-00000000000000000009.parquet",      // 19 digits
		"raw/s/partition=1/00000000000000000000-0000000000000000000a.parquet",
		ArchiveProgressKey("s"),
	} {
		_, _, _, _, ok := ParseRawKey(key)
		require.False(t, ok, "%q", key)
	}
}

func TestStorageKeys(t *testing.T) {
	day := time.Date(2026, 11, 25, 23, 30, 0, 0, time.FixedZone("X", -3*3600)) // 2026-11-26 in UTC
	require.Equal(t, "raw/s/_progress.json", ArchiveProgressKey("s"))
	require.Equal(t, "views/v/runs/r1/", ViewRunPrefix("v", "r1"))
	require.Equal(t, "views/v/runs/r1/dt=2026-11-26/part-00007.parquet", ViewDayKey("v", "r1", day, 7))
	require.Equal(t, "views/v/runs/r1/level=1h/dt=2026-11-26/part-00000.parquet", ViewLevelDayKey("v", "r1", Granularity(time.Hour), day, 0))
	require.Equal(t, "views/v/_current.json", ManifestKey("v"))
	require.Equal(t, "lake/s/dt=2026-11-26/", LakeDayPrefix("s", day))
}

func validManifest() Manifest {
	day := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	return Manifest{
		View: "v", RunID: "20261125T100000Z-1", Fingerprint: "abc", ChunkSize: 100,
		CreatedAt: day.Add(10 * time.Hour),
		Absorbed:  map[int32]int64{0: 300, 1: 0, 5: 1000},
		Levels:    []Granularity{Granularity(24 * time.Hour), Granularity(time.Hour)},
		Files: []ManifestFile{{Key: ViewDayKey("v", "20261125T100000Z-1", day, 0), Day: day, Rows: 10, Bytes: 1000,
			MinTime: day, MaxTime: day.Add(time.Hour)},
			{Key: ViewLevelDayKey("v", "20261125T100000Z-1", Granularity(time.Hour), day, 0), Level: Granularity(time.Hour), Day: day, Rows: 2, Bytes: 500,
				MinTime: day, MaxTime: day.Add(time.Hour)}},
		Rows: 10, Events: 500, Duplicates: 2, Invalid: 1, Duration: 1.5, PreviousRunID: "r0",
	}
}

func TestDecodeManifestValid(t *testing.T) {
	want := validManifest()
	data, err := json.Marshal(want)
	require.NoError(t, err)
	got, err := DecodeManifest(data)
	require.NoError(t, err)
	require.Equal(t, want, *got)
	require.Equal(t, int64(3), got.AbsorbedChunks(0))
	require.Equal(t, int64(0), got.AbsorbedChunks(1))
	require.Equal(t, int64(10), got.AbsorbedChunks(5))
	require.Equal(t, int64(0), got.AbsorbedChunks(2), "a partition not listed absorbed nothing")
	require.Equal(t, int64(0), (*Manifest)(nil).AbsorbedChunks(0))
	require.Contains(t, string(data), `"levels":["1d","1h"]`)
	require.Contains(t, string(data), `"level":"1h"`)
	require.Len(t, got.BaseFiles(), 1)

	// Unknown fields are allowed: a newer writer may add some.
	_, err = DecodeManifest([]byte(`{"view":"v","run_id":"r","chunk_size":10,"absorbed_offsets":{"0":20},"future":1}`))
	require.NoError(t, err)
	// No files and no absorbed offsets is a valid (empty) run.
	_, err = DecodeManifest([]byte(`{"view":"v","run_id":"r","chunk_size":10}`))
	require.NoError(t, err)
}

func TestDecodeManifestRejects(t *testing.T) {
	edit := func(f func(m *Manifest)) []byte {
		m := validManifest()
		f(&m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	file := func(key string) func(m *Manifest) {
		return func(m *Manifest) { m.Files = append(m.Files, ManifestFile{Key: key}) }
	}
	cases := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"empty", nil, "unexpected end of JSON input"},
		{"not JSON", []byte("not json"), "invalid character"},
		{"array", []byte(`[]`), "cannot unmarshal array"},
		{"trailing data", append(edit(func(*Manifest) {}), []byte(" {}")...), "invalid character"},
		{"missing view", edit(func(m *Manifest) { m.View = "" }), "view and run_id are required"},
		{"missing run id", edit(func(m *Manifest) { m.RunID = "" }), "view and run_id are required"},
		{"zero chunk size", edit(func(m *Manifest) { m.ChunkSize = 0 }), "chunk_size 0"},
		{"negative chunk size", edit(func(m *Manifest) { m.ChunkSize = -100 }), "chunk_size -100"},
		{"absorbed not a chunk boundary", edit(func(m *Manifest) { m.Absorbed[2] = 150 }), "absorbed offset 150 of partition 2 is not a chunk boundary"},
		{"absorbed negative", edit(func(m *Manifest) { m.Absorbed[2] = -100 }), "not a chunk boundary"},
		{"negative partition", edit(func(m *Manifest) { m.Absorbed[-1] = 100 }), "partition -1"},
		{"partition not a number", []byte(`{"view":"v","run_id":"r","chunk_size":10,"absorbed_offsets":{"x":20}}`), "invalid"},
		{"partition over int32", []byte(`{"view":"v","run_id":"r","chunk_size":10,"absorbed_offsets":{"2147483648":20}}`), "invalid"},
		{"offset not a number", []byte(`{"view":"v","run_id":"r","chunk_size":10,"absorbed_offsets":{"0":"20"}}`), "cannot unmarshal"},
		{"file of another run", edit(file(ViewDayKey("v", "other", time.Now(), 0))), "outside the run's folder"},
		{"file of another view", edit(file(ViewDayKey("w", "20261125T100000Z-1", time.Now(), 0))), "outside the run's folder"},
		{"file is the folder", edit(file(ViewRunPrefix("v", "20261125T100000Z-1"))), "outside the run's folder"},
		{"file climbs out", edit(file(ViewRunPrefix("v", "20261125T100000Z-1") + "../../../../raw/s/x.parquet")), "outside the run's folder"},
		{"file with a dot segment", edit(file(ViewRunPrefix("v", "20261125T100000Z-1") + "./x.parquet")), "outside the run's folder"},
		{"file with an empty segment", edit(file(ViewRunPrefix("v", "20261125T100000Z-1") + "dt=x//y.parquet")), "outside the run's folder"},
		{"file outside the bucket layout", edit(file("/etc/passwd")), "outside the run's folder"},
		{"view climbs out", edit(func(m *Manifest) {
			m.View = ".."
			m.Files = nil
		}), "not a view name"},
		{"view with a slash", edit(func(m *Manifest) { m.View = "v/runs/x" }), "not a view name"},
		{"run id climbs out", edit(func(m *Manifest) {
			m.RunID = ".."
			m.Files = []ManifestFile{{Key: "views/v/runs/../x.parquet"}}
		}), "one path segment"},
		{"run id with a slash", edit(func(m *Manifest) { m.RunID = "a/b" }), "one path segment"},
		{"run id with a newline", edit(func(m *Manifest) { m.RunID = "a\nb" }), "one path segment"},
		{"file of an unlisted level", edit(func(m *Manifest) { m.Levels = m.Levels[:1] }), "is of level 1h, which the manifest does not list"},
		{"levels not coarsest first", edit(func(m *Manifest) { m.Levels[0], m.Levels[1] = m.Levels[1], m.Levels[0] }), "coarsest first"},
		{"level not dividing a day", edit(func(m *Manifest) { m.Levels[0] = Granularity(7 * time.Hour) }), "must divide one day"},
		{"huge input", append([]byte(`{"view":"v","run_id":"r","chunk_size":10,"x":"`), make([]byte, 64<<20)...), "bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeManifest(tc.data)
			require.ErrorIs(t, err, ErrBadManifest)
			require.Contains(t, err.Error(), tc.reason)
			require.Nil(t, m)
		})
	}
}

// TestColumns checks the stored shape of raw events and view rows, and that
// every measure's Cell has the Go type its column type promises.
func TestColumns(t *testing.T) {
	cfg := exampleConfig(t)
	raw := cfg.Stream("pageviews").RawColumns()
	var names []string
	for _, c := range raw {
		names = append(names, c.Name)
	}
	require.Equal(t, []string{"event_id", "ts", "country", "device", "user_id", "amount", "latency_ms", ColRaw, ColPartition, ColOffset, ColKafkaTS}, names)
	require.Equal(t, Column{Name: "ts", Type: ColTimestamp, Nullable: true}, raw[1])
	require.Equal(t, Column{Name: "amount", Type: ColFloat64, Nullable: true}, raw[5])
	require.Equal(t, Column{Name: ColOffset, Type: ColInt64}, raw[9])

	v := allTypesConfig(t).View("every")
	rows := v.RowColumns()
	require.Len(t, rows, 1+len(v.Dimensions)+len(v.Measures))
	require.Equal(t, Column{Name: ColWindowStart, Type: ColTimestamp}, rows[0])
	require.Equal(t, Column{Name: "kind", Type: ColString}, rows[1])
	require.Equal(t, Column{Name: "s", Type: ColString}, rows[2])
	want := map[MeasureType]Column{
		MeasureCount: {Type: ColInt64}, MeasureSum: {Type: ColFloat64},
		MeasureMin: {Type: ColFloat64, Nullable: true}, MeasureMax: {Type: ColFloat64, Nullable: true},
		MeasureDistinct: {Type: ColBytes}, MeasureQuantiles: {Type: ColBytes},
	}
	empty := v.NewAggregate()
	for i, m := range v.Measures {
		c := rows[3+i]
		require.Equal(t, m.Name, c.Name)
		w := want[m.Type]
		w.Name = m.Name
		require.Equal(t, w, c)
		require.True(t, cellTypeOK(&m, m.Cell(&empty[i])), m.Name)
	}

	st := allTypesConfig(t).Stream("ev")
	for _, f := range st.Fields {
		require.Equal(t, map[FieldType]ColumnType{TypeString: ColString, TypeInt64: ColInt64, TypeFloat64: ColFloat64,
			TypeBool: ColBool, TypeTimestamp: ColTimestamp}[f.Type], FieldColumnType(f.Type), f.Name)
	}
}
