"""systemd unit files shipped with the package (installed by ``connguard service install``)."""
