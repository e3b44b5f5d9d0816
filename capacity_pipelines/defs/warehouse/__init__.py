"""The warehouse as a whole: the analysts' snapshot, published after every writer."""
