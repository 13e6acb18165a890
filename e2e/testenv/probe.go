package testenv

// EUIDProbe is a static binary that prints its effective uid
// ("Effective uid: 0"): installed setuid root, it shows whether whoever
// runs it gets root. It is built from csrc/nnp.c, once (see staticBinary).
func EUIDProbe() ([]byte, error) { return staticBinary("nnp") }
