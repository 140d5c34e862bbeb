"""The synthetic 4D world (scene, ray casting, textures, rendering) and the WorldTrack file format."""
