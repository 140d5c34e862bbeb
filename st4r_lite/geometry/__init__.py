"""Camera geometry: pinhole conventions, cameras from pointmaps (focal, PnP), and the APD/EPE track metrics."""
