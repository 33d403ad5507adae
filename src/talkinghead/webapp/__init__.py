"""`talkinghead app`: a local web UI (photos → avatar, driving video → mp4, browser webcam →
live avatar), served by the standard library's HTTP server with no extra dependency."""
