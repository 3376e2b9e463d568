// Package bench will hold the load generator and the peer comparisons
// (issue 5). The crypto benchmarks live beside the code they measure
// (`make bench`).
package bench
