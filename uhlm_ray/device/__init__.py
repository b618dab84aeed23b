"""The phone: the one-draft and block decoders, uncertainty measures, skip policies, block stopping rules, paraphrases.
May import sampling/, link/, models/, protocol, records, config, validation; never base_station/ or the loop."""
