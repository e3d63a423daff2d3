"""Networks of the source papers, one file each."""
