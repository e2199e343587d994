package enrollui

import (
	"sync"
	"time"
)

// Step states.
const (
	stepTodo = "todo"
	stepRun  = "running"
	stepOK   = "done"
	stepFail = "failed"
	stepSkip = "skipped"
)

// job is an enrollment running in the background while its page shows the
// steps. It belongs to the session that started it.
type job struct {
	id, owner string
	started   time.Time

	// atEnd frees the token once the work is over, before the job shows
	// as done: a page loaded after the receipt must find the token free.
	atEnd   func()
	endOnce sync.Once

	mu      sync.Mutex
	steps   []jobStep
	done    bool
	err     string
	receipt *receipt
}

type jobStep struct {
	Key, Name, State string
}

// jobView is a copy for the templates.
type jobView struct {
	ID      string
	Steps   []jobStep
	Done    bool
	Err     string
	Receipt *receipt
}

func (j *job) view() jobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	return jobView{ID: j.id, Steps: append([]jobStep(nil), j.steps...), Done: j.done, Err: j.err, Receipt: j.receipt}
}

// set moves step key to state; running marks the next todo step running.
func (j *job) set(key, state string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := range j.steps {
		if j.steps[i].Key == key {
			j.steps[i].State = state
		}
	}
}

func (j *job) end() {
	j.endOnce.Do(func() {
		if j.atEnd != nil {
			j.atEnd()
		}
	})
}

// fail marks the running step (or the first todo one) failed, the rest skipped.
func (j *job) fail(msg string) {
	j.end()
	j.mu.Lock()
	defer j.mu.Unlock()
	failed := false
	for i := range j.steps {
		switch st := j.steps[i].State; {
		case !failed && (st == stepRun || st == stepTodo):
			j.steps[i].State, failed = stepFail, true
		case st == stepTodo || st == stepRun:
			j.steps[i].State = stepSkip
		}
	}
	j.err, j.done = msg, true
}

func (j *job) finish(r *receipt) {
	j.end()
	j.mu.Lock()
	defer j.mu.Unlock()
	j.receipt, j.done = r, true
}

type jobs struct {
	mu sync.Mutex
	m  map[string]*job
	wg sync.WaitGroup
}

func newJobs() *jobs { return &jobs{m: map[string]*job{}} }

// start runs run in the background; atEnd runs once when it fails or
// finishes (or returns without either).
func (js *jobs) start(owner string, steps []jobStep, atEnd func(), run func(*job)) *job {
	j := &job{id: randomToken(16), owner: owner, started: time.Now(), steps: steps, atEnd: atEnd}
	js.mu.Lock()
	for id, o := range js.m {
		if time.Since(o.started) > time.Hour {
			delete(js.m, id)
		}
	}
	js.m[j.id] = j
	js.mu.Unlock()
	js.wg.Add(1)
	go func() {
		defer js.wg.Done()
		defer j.end()
		run(j)
	}()
	return j
}

func (js *jobs) get(id, owner string) *job {
	js.mu.Lock()
	defer js.mu.Unlock()
	j := js.m[id]
	if j == nil || j.owner != owner {
		return nil
	}
	return j
}

func (js *jobs) wait() { js.wg.Wait() }
