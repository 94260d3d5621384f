package runner

import (
	"os"

	"github.com/labctl/labctl/labs"
)

// parseLab turns a lab file's bytes back into a Lab (gc and every command
// after up read the copy kept in the instance directory).
var parseLab = labs.Parse

// loadLabSource reads the instance's copy of its lab file.
func loadLabSource(path, origFile string) (*labs.Lab, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lab, err := parseLab(origFile, data)
	if err != nil {
		return nil, err
	}
	lab.Source = data
	lab.File = origFile
	return lab, nil
}
