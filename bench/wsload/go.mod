module finstream/bench/wsload

go 1.22
