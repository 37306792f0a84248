"""Protocol constants shared by every stage that produces or stores numbers."""

# Bump when a change in ganbench alters features or what metrics compute from them, so that old
# feature-cache entries and stored results are never mixed with new ones.
METRIC_PROTOCOL_VERSION = 1
