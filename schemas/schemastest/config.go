// Package schemastest holds the configuration vocabulary's test data that
// more than one package's tests check against: schemas, which validates
// the vocabulary, and config, whose whole-file loader must report the same.
// It imports nothing of tandem, so schemas' own tests can use it.
package schemastest

// ConfigBase is a small valid configuration each RejectCase breaks in one
// way.
const ConfigBase = `
chunk_size: 100
streams:
  - name: s
    partitions: 2
    id_field: id
    time_field: ts
    fields:
      - { name: id, type: string }
      - { name: ts, type: timestamp }
      - { name: c, type: string }
      - { name: n, type: float64 }
      - { name: b, type: bool }
views:
  - name: v
    stream: s
    granularity: 1m
    dimensions: [c]
    measures:
      - { name: cnt, type: count }
      - { name: total, type: sum, field: n }
`

// RejectCase replaces From with To once in ConfigBase; loading the result
// must fail with an error containing Want.
type RejectCase struct{ Name, From, To, Want string }

// VocabularyRejects are the configurations schemas' validation refuses.
var VocabularyRejects = []RejectCase{
	{"unknown key", "chunk_size: 100", "chunk_size: 100\nchunk_sise: 3", `:3: field "chunk_sise" not recognised`},
	{"unknown nested key", "    partitions: 2", "    partitions: 2\n    partitons: 2", `:6: field "partitons" not recognised`},
	{"duplicate stream", "views:", "  - { name: s, partitions: 1, id_field: id, time_field: ts, fields: [{name: id, type: string}, {name: ts, type: timestamp}] }\nviews:", `stream "s" is defined twice`},
	{"view name with __", "  - name: v\n", "  - name: v__v2\n", `view name "v__v2" must not contain __ (it is reserved for the storage of view versions`},
	{"duplicate view", "      - { name: total, type: sum, field: n }", "      - { name: total, type: sum, field: n }\n  - { name: v, stream: s, granularity: 1h, measures: [{name: c2, type: count}] }", `view "v" is defined twice`},
	{"unknown stream", "    stream: s", "    stream: nope", `:16: view "v" is on unknown stream "nope"`},
	{"dimension not string", "dimensions: [c]", "dimensions: [n]", `dimension "n" must be a string field; it is float64`},
	{"dimension unknown", "dimensions: [c]", "dimensions: [zz]", `dimension "zz" is not a field`},
	{"sum over string", "type: sum, field: n", "type: sum, field: c", `measure "total" (sum) needs a numeric field; "c" is string`},
	{"min over bool", "type: sum, field: n", "type: min, field: b", `(min) needs a numeric field`},
	{"quantiles over string", "type: sum, field: n", "type: quantiles, field: c", `(quantiles) needs a numeric field`},
	{"unknown measure", "type: sum, field: n", "type: avg, field: n", `unknown type "avg"`},
	{"unknown granularity", "granularity: 1m", "granularity: 2m", `:17: granularity "2m" is not one of`},
	{"zero chunk size", "chunk_size: 100", "chunk_size: 0", `:2: chunk_size must be positive`},
	{"negative chunk size", "chunk_size: 100", "chunk_size: -5", `chunk_size must be positive`},
	{"no id field", "    id_field: id\n", "", `stream "s" has no id_field`},
	{"no time field", "    time_field: ts\n", "", `stream "s" has no time_field`},
	{"id field undeclared", "id_field: id", "id_field: uid", `id_field "uid" is not a declared field`},
	{"time field not timestamp", "time_field: ts", "time_field: c", `time_field "c" must be a timestamp field`},
	{"bad field type", "{ name: b, type: bool }", "{ name: b, type: boolean }", `unknown type "boolean"`},
	{"bad duration", "chunk_size: 100", "chunk_size: 100\ningest: { max_future_skew: soon }", `"soon" is not a duration`},
	{"not yaml", "chunk_size: 100", "chunk_size: [", `:3:`},
	{"wrong type", "chunk_size: 100", "chunk_size: lots", `:2: cannot`},
	{"level not a granularity", "dimensions: [c]", "dimensions: [c]\n    levels: [1h, 2x]", `:19: view "v": views[].levels: granularity "2x": unit must be m, h or d`},
	{"level not coarser", "dimensions: [c]", "dimensions: [c]\n    levels: [1m]", `views[].levels: level 1m must be coarser than the view's granularity 1m`},
	{"level not dividing a day", "dimensions: [c]", "dimensions: [c]\n    levels: [7m]", `views[].levels: level 7m must divide one day`},
	{"level twice", "dimensions: [c]", "dimensions: [c]\n    levels: [1h, 60m]", `views[].levels: level 1h is listed twice`},
	{"level not a multiple", "granularity: 1m", "granularity: 15m\n    levels: [10m]", `level 10m must be coarser than the view's granularity 15m and a multiple of it`},
	{"example secret", "chunk_size: 100", "chunk_size: 100\nclickhouse: { password: change-me-clickhouse }", `clickhouse.password is still the example value "change-me-clickhouse"`},
	{"example token", "chunk_size: 100", "chunk_size: 100\nauth: { query_tokens: [fine, Change-Me-Query] }", `auth.query_tokens[1] is still the example value`},
	{"bad cluster name", "chunk_size: 100", "chunk_size: 100\nclickhouse: { cluster: \"two shards\" }", `:3: clickhouse.cluster "two shards" must name a cluster of the servers' remote_servers`},
	{"replicated without a cluster", "chunk_size: 100", "chunk_size: 100\nclickhouse: { replicated: true }", `:3: clickhouse.replicated needs clickhouse.cluster`},
	{"empty metrics token", "chunk_size: 100", "chunk_size: 100\nauth: { metrics_tokens: [\"\"] }", `auth.metrics_tokens[0] is empty`},
}
