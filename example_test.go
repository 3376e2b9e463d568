package ratchetd_test

import (
	"fmt"
	"log"

	"github.com/ratchetd/ratchetd"
)

// Two accounts in one engine exchange end-to-end encrypted messages: Alice
// scans Bob's bundle (a QR code in a real client), runs X3DH, and Bob
// replies on the ratchet.
func Example() {
	eng, err := ratchetd.Open(ratchetd.Options{}) // in memory: store and transport
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()

	alice, _ := eng.CreateAccount()
	bob, _ := eng.CreateAccount()
	code, _ := bob.ExportBundle()
	if err := alice.ImportBundle(code); err != nil {
		log.Fatal(err)
	}

	if _, err := alice.Send(bob.Identity(), []byte("hello bob")); err != nil {
		log.Fatal(err)
	}
	m := <-eng.Messages()
	fmt.Printf("bob got %q from alice: %v\n", m.Payload, m.Sender == alice.Identity())

	if _, err := bob.Send(alice.Identity(), []byte("hi alice")); err != nil {
		log.Fatal(err)
	}
	m = <-eng.Messages()
	fmt.Printf("alice got %q\n", m.Payload)
	// Output:
	// bob got "hello bob" from alice: true
	// alice got "hi alice"
}

// A bot that answers every message, with a handler instead of the channel.
func ExampleOptions_handler() {
	done := make(chan string, 1)
	var eng *ratchetd.Engine
	var bot *ratchetd.Account
	eng, _ = ratchetd.Open(ratchetd.Options{Handler: func(m ratchetd.Message) {
		if m.RecipientInstallation == bot.InstallationID() {
			bot.Send(m.Sender, append([]byte("echo: "), m.Payload...))
			return
		}
		done <- string(m.Payload)
	}})
	defer eng.Close()
	bot, _ = eng.CreateAccount()
	user, _ := eng.CreateAccount()
	code, _ := bot.ExportBundle()
	user.ImportBundle(code)
	user.Send(bot.Identity(), []byte("ping"))
	fmt.Println(<-done)
	// Output: echo: ping
}

// Devices of the same identity pair with explicit approval.
func ExampleAccount_ApproveDevice() {
	eng, _ := ratchetd.Open(ratchetd.Options{})
	defer eng.Close()
	phone, _ := eng.CreateAccount()
	_ = phone
	// A second installation of the same identity would be created with
	// eng.AddInstallation(identityKey) on the other device, which then calls
	// AnnounceDevice; the first device approves it:
	//   phone.ApproveDevice(phone.Identity(), laptopInstallationID)
	devices, _ := phone.Devices(phone.Identity())
	fmt.Println(len(devices), "paired devices")
	// Output: 0 paired devices
}
