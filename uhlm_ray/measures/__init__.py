"""Everything computed from records: metrics, block metrics, the two clocks, similarity, Theorem 1, CU-HLM's theory.
May import link/ (to reprice uploads), records, snr, config, validation; never device/, base_station/ or the loop."""
