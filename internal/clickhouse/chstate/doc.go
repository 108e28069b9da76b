// Package chstate builds ClickHouse aggregate-function states in Go: the
// bytes of an AggregateFunction(...) column value, so that tandem can write
// them beside its own sketches and analysts finalize them in SQL with the
// matching -Merge function.
//
// Two states, chosen because their serialized format is the same on
// ClickHouse 18.16 and on the current engine (checked byte for byte by the
// oracle tests against both), and because they stay small:
//
//   - Distinct is uniqHLL12 over String: exact (the keys' 64-bit hashes) up
//     to 16 distinct keys, then a HyperLogLog of 2^12 registers, at most
//     2651 bytes. Finalize with uniqHLL12Merge. uniqCombined64 does not
//     exist on 18.16, and uniqCombined's medium-size hash table is written
//     in an order that differs between versions.
//   - Quantiles is quantilesTDigest over Float64: at most 2048 centroids of
//     a Float32 mean and count, the merge rule of the current engine.
//     Finalize with quantilesTDigestMerge(0.5, 0.9, 0.99).
//
// Both give the same bytes as ClickHouse's own -State over the same values
// in the same order (for Quantiles: on the current engine; 18.16 compresses
// centroids with Float32 arithmetic and may glue different neighbours, so
// there only the finalized numbers are compared). Both decoders refuse bytes
// that ClickHouse would not have written and allocate at most the state's
// bounded size.
package chstate
