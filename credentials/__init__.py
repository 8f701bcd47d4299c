"""Venue keys kept by the service: sealed with AES-256-GCM (sealing.py) in JetStream KV, a file or Vault
(store.py and one module per backend). May import schemas, config and bus; the gateway and the actors import it."""
