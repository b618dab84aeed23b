"""The uplink: fading and the link models (eq. 3, ARQ, inversion), payload codecs and their bits, repricing of
recorded uploads, eq. 4. May import sampling/, records, snr, config, validation; never device/ or base_station/."""
