"""The Faust application: settings, topics, tables and codecs."""
