"""The Feed process: websocket frames in, market records out onto the ring (parse, books, conflation,
recording, the synthetic market)."""
