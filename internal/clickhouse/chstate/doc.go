// Package chstate builds ClickHouse aggregate-function states in Go: the
// bytes of an AggregateFunction(...) column value, so that tandem can write
// them beside its own sketches and analysts finalize them in SQL with the
// matching -Merge function at any grouping.
//
// Two states, chosen because their serialized format is the same on
// ClickHouse 18.16 and on the current engine (the oracle tests compare
// bytes against both), and because they stay small:
//
//   - Distinct is uniqHLL12 over String (UniqHLL12Type): the keys' 64-bit
//     CityHash, in insertion order, up to 16 distinct keys (2 + 8·k bytes,
//     exact), then a HyperLogLog of 2^12 five-bit registers (2651 bytes;
//     in memory sparse, 4 bytes a set register, until 512 are set).
//     Finalize with uniqHLL12Merge; Estimate gives the same digits in Go.
//     Not uniqCombined64 (absent from 18.16) nor uniqCombined (its
//     medium-size hash table is written in an order that differs between
//     versions, and it grows to 98 KB at its default precision).
//   - Quantiles is quantilesTDigest over Float64 (QuantilesTDigestType): at
//     most 2048 centroids of a Float32 mean and count (8 bytes each), built
//     with the current engine's merge rule. Finalize with
//     quantilesTDigestMerge(0.5, 0.9, 0.99); Quantiles gives the current
//     engine's digits in Go. 18.16 reads the same states but glues and
//     interpolates in its own way, so there the answer agrees within the
//     TDigest's rank error instead.
//
// ClickHouse 18.16 cannot read a state sent by a client (no CAST from
// String, and clickhouse-go has no AggregateFunction column), so tandem
// stores each state as the arrays that rebuild it with arrayReduce (see
// arrays.go): a Distinct as UInt64 keys (AppendKeys, the same bytes), a
// Quantiles as its centroids (AppendCentroids, added as weighted values).
//
// Equal bytes need equal input order: both states keep insertion order
// until they are large (Distinct) or compressed (Quantiles), which a
// replay of the same events in the same order reproduces. Both decoders
// refuse bytes ClickHouse would not have written, and allocate at most a
// state's bounded size whatever the input claims.
package chstate
