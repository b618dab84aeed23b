"""What both ends of the link compute with: speculative verification (one draft; blocks), keyed randomness.
Imports only `validation`, torch and numpy: the phone and the base station both build on it."""
