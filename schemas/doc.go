// Package schemas is tandem's vocabulary: streams, events, views, measures,
// windows, chunks, manifests and the configuration that declares them.
//
// Every layer (ingest, speed, batch, serving) imports this package and none
// imports another layer. It depends on the standard library plus the two
// sketch libraries the measures are built on and a YAML parser, and does no
// I/O beyond reading the configuration file.
package schemas
