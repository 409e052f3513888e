"""The Brain process: reads the ring, keeps candles and indicators, runs strategies and hands orders to the
order side (`aegis.trade`)."""
