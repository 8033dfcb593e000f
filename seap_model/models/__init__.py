"""The networks and their loading: U-Net, style adapter and reference attention, reference encoders (H/ASP,
frozen YAMNet), codecs, vocoders, the text encoder; ``builders`` builds the trainable ones from params."""
