// Package speed is tandem's speed layer: a Kafka consumer group that folds
// every event of a stream into every view defined on it and upserts the
// cumulative rows of each open chunk into ClickHouse within about a second.
//
// # Exactness
//
// Rows are kept per (view, window, dimensions, partition, chunk), where chunk
// = offset / chunk_size. For each partition the layer keeps in memory the
// cumulative rows of the open chunk and the event ids of the open and the
// previous chunk. A flush snapshots (encodes) and then upserts, for every
// view, the rows changed since the previous flush with version = the
// highest offset consumed in their chunk, on another goroutine while
// folding goes on, one write in flight per partition, in order;
// the speed table is a ReplacingMergeTree(version), so the newest write of a
// row wins. A finished chunk's last rows go out in the same insert as the
// first rows of the next chunk (one insert is one part, so both land or
// neither does), which keeps this invariant, per view and partition:
//
//	every row that changed at an offset <= max(version) has been written
//	with a version >= that offset.
//
// On claiming a partition, o = min over the stream's views of max(version)
// (raised to the last offset the batch layer absorbed, see Sink.Progress);
// with k = chunk(o+1) the layer reads chunk k-1 only to learn its ids, then
// rebuilds chunk k from its first offset. Folding is a pure function of the
// offsets read, so a replay (after kill -9, or by a zombie member after a
// rebalance) writes the same content for the same version, or newer rows.
// docs/speed.md has the whole argument.
package speed
