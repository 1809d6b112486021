"""Cluster mode (CLUSTER_URI=redis://…): a coordinator (`scrapy crawlall`) puts every selected
source's seeds in per-source Redis queues; workers (`scrapy worker`) lease requests from them,
run the whole pipeline and report their stats; the coordinator waits for the queues to drain and
sums the stats into the usual summary. See README "Running on several machines"."""
